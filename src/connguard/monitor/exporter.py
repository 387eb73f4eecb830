"""The exporter's HTTP edge: /metrics (own process + the default target) and /probe?target=… for a fleet.

Every page answers 200 with metrics: a target that cannot be observed is `connguard_up 0` plus
`connguard_probe_error{reason}` and one log line, never a 500 or a traceback. Passwords come from
files or the environment, never from the query string, and only redacted URLs are logged.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from connguard.errors import BadArguments, BadTarget, ConnguardError
from connguard.monitor.exporter_metrics import ProbeView, families, status_families
from connguard.monitor.exporter_targets import ExporterSettings, TargetRegistry, probe_reason
from connguard.target import Target, parse_target

log = logging.getLogger("connguard.exporter")

INDEX = (b"<html><head><title>connguard exporter</title></head><body><h1>connguard exporter</h1>"
         b"<p><a href=\"/metrics\">/metrics</a>: this process, plus the default target when one is configured.</p>"
         b"<p>/probe?target=redis://host:port : one Redis or Valkey server (passwords from --password-file, "
         b"$REDISCLI_AUTH or --auth-file, never in the URL).</p></body></html>\n")


@dataclass(frozen=True)
class Credentials:
    """Where passwords come from: one per endpoint (--auth-file), else one for all (--password-file or
    $REDISCLI_AUTH). A password in a probe URL is refused: it would sit in Prometheus's config and logs."""

    default: str | None = None
    per_endpoint: Mapping[tuple[str, int | None], tuple[str | None, str]] = field(default_factory=dict)

    def for_target(self, target: Target) -> tuple[str | None, str | None]:
        """(username, password) for `target`."""
        hit = self.per_endpoint.get(((target.path or target.host or "").lower(), target.port))
        if hit is not None:
            return (target.username or hit[0], hit[1])
        return (target.username, self.default)


def read_password_file(path: str) -> str:
    """The first line of `path`, without its newline (the redis-cli / Docker secrets convention)."""
    try:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline().rstrip("\r\n")
    except OSError as exc:
        raise BadArguments(f"--password-file {path}: {exc.strerror or exc}") from None
    if not line:
        raise BadArguments(f"--password-file {path}: the file is empty")
    return line


def read_auth_file(path: str) -> dict[tuple[str, int | None], tuple[str | None, str]]:
    """Lines `redis://[user@]host:port PASSWORD` (or `unix:///path.sock PASSWORD`); `#` starts a comment."""
    out: dict[tuple[str, int | None], tuple[str | None, str]] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise BadArguments(f"--auth-file {path}: {exc.strerror or exc}") from None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        url, _, password = line.partition(" ")
        password = password.strip()
        if not password:
            raise BadArguments(f"--auth-file {path}:{number}: expected `URL PASSWORD`")
        try:
            target = parse_target(url, env={})
        except BadTarget as err:
            raise BadArguments(f"--auth-file {path}:{number}: {err.message}") from None
        if target.password is not None:
            raise BadArguments(f"--auth-file {path}:{number}: put the password after the URL, not inside it")
        out[((target.path or target.host or "").lower(), target.port)] = (target.username, password)
    return out


def resolve_target(raw: str, creds: Credentials) -> Target:
    """A probe's `target` parameter to a Target with its credentials. `host:port` means redis://host:port.
    A password in it (user:pass@ or ?password=) is refused, whatever the URL parser accepts."""
    text = raw.strip()
    if "://" not in text:
        text = f"redis://{text}"
    from connguard.discovery.sentinel_url import is_sentinel_url  # the same target forms as every command

    if is_sentinel_url(text):  # the primary the Sentinels name at this scrape, so a failover is followed
        from connguard.discovery.sentinel import current_primary
        from connguard.discovery.sentinel_url import parse_sentinel_url

        spec = parse_sentinel_url(text, env={})
        if spec.password is not None or any(t.password is not None for t in spec.sentinels):
            raise BadTarget(f"{spec.redacted}: a password in the probe URL is refused (it would be kept in "
                            "Prometheus's config and logs); use --password-file, $REDISCLI_AUTH or --auth-file")
        text = current_primary(spec, connect_timeout_s=2.0).redacted
    target = parse_target(text, env={})  # env={}: $REDISCLI_AUTH is applied below, per endpoint
    if target.password is not None:
        raise BadTarget(f"{target.redacted}: a password in the probe URL is refused (it would be kept in "
                        "Prometheus's config and logs); use --password-file, $REDISCLI_AUTH or --auth-file")
    user, password = creds.for_target(target)
    return replace(target, username=user, password=password)


class _Families:
    """A prometheus-client collector over precomputed families (one scrape's worth)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> list[Metric]:
        return self._metrics


def render(metrics: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(metrics))  # type: ignore[arg-type]
    return generate_latest(registry)


class Exporter:
    """The pages, independent of the HTTP server: each method returns the bytes of one page."""

    def __init__(self, registry: TargetRegistry, creds: Credentials, default_target: Target | None = None) -> None:
        self.registry = registry
        self.creds = creds
        self.default_target = default_target

    def probe_page(self, raw_target: str | None) -> bytes:
        return render(self.probe_families(raw_target))

    def probe_families(self, raw_target: str | None) -> list[Metric]:
        if not raw_target:
            log.warning("probe without ?target=: nothing to observe")
            return status_families(False, False, "bad_target")
        try:
            target = resolve_target(raw_target, self.creds)
        except ConnguardError as err:
            log.warning("probe refused: %s", err.line())
            return status_families(False, False, probe_reason(err))
        return self.target_families(target)

    def target_families(self, target: Target) -> list[Metric]:
        try:
            return families(self.registry.scrape(target))
        except Exception as exc:  # a bug must cost one scrape, not the page: one line, no traceback
            log.error("target %s: internal error %s: %s", target.redacted, type(exc).__name__, exc)
            return families(ProbeView(snapshot=None, error_reason="internal"))

    def metrics_page(self) -> bytes:
        own = generate_latest(REGISTRY)
        extra: list[Metric] = [GaugeMetricFamily("connguard_exporter_targets", "Targets the exporter holds a connection (or a retry) for.",
                                                 value=float(len(self.registry)))]
        if self.default_target:
            extra += self.target_families(self.default_target)
        return own + render(extra)


def _handler(exporter: Exporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "connguard-exporter"

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            try:
                parts = urlsplit(self.path)
                if parts.path == "/metrics":
                    self._send(200, exporter.metrics_page(), CONTENT_TYPE_LATEST)
                elif parts.path == "/probe":
                    values = parse_qs(parts.query).get("target")
                    self._send(200, exporter.probe_page(values[-1] if values else None), CONTENT_TYPE_LATEST)
                elif parts.path == "/":
                    self._send(200, INDEX, "text/html; charset=utf-8")
                else:
                    self._send(404, b"not found: try /metrics or /probe?target=redis://host:port\n", "text/plain")
            except (BrokenPipeError, ConnectionResetError):
                pass  # Prometheus gave up on this scrape (timeout): nothing to answer
            except Exception as exc:  # never a 500 with a traceback
                log.error("request failed: %s: %s", type(exc).__name__, exc)
                try:
                    self._send(200, render(status_families(False, False, "internal")), CONTENT_TYPE_LATEST)
                except OSError:
                    pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # request lines carry the probe URL; our own log lines carry it redacted

    return Handler


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise BadArguments(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9187")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def bind(listen: str, exporter: Exporter) -> ThreadingHTTPServer:
    """Bind the HTTP server; a port in use (or not ours to take) is a one-line error, exit 3."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("ExporterHTTPServer", (ThreadingHTTPServer,), {"daemon_threads": True, "address_family": family})
    try:
        server = server_class((host, port), _handler(exporter))
    except OSError as exc:
        why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise BadArguments(f"--listen {listen}: {why}") from None
    return server


def run(server: ThreadingHTTPServer, exporter: Exporter, *, on_ready: Callable[[str], None] | None = None,
        stop: threading.Event | None = None) -> None:
    """Serve (from `bind`) until interrupted or `stop` is set, reaping idle targets in the background."""
    stop = stop or threading.Event()
    period = max(0.5, min(exporter.registry.settings.target_idle_s / 4, 5.0))

    def reaper() -> None:
        while not stop.wait(period):
            exporter.registry.reap()

    threading.Thread(target=reaper, name="connguard-exporter-reaper", daemon=True).start()
    host, port = server.server_address[:2]
    log.info("listening on http://%s:%d (/metrics, /probe?target=…)", host, port)
    if on_ready:
        on_ready(f"{host}:{port}")
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True)
    serving.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        exporter.registry.close()


def sampler_factory(settings: ExporterSettings) -> Callable[[Target], object]:
    from connguard.probe.sampler import Sampler

    def make(target: Target) -> object:
        # Short connect budgets: a scrape must answer within Prometheus's scrape timeout.
        return Sampler(target, connect_timeout_s=settings.connect_timeout_s,
                       reconnect_timeout_s=settings.connect_timeout_s, census=False)

    return make


def configure_logging() -> None:
    handler = logging.StreamHandler()
    formatter = logging.Formatter("%(asctime)sZ connguard exporter: %(levelname)s %(message)s")
    formatter.converter = time.gmtime  # type: ignore[method-assign]  # UTC, as the rest of a fleet's logs
    handler.setFormatter(formatter)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def env_password(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get("REDISCLI_AUTH") or None


__all__ = ["Credentials", "Exporter", "bind", "read_auth_file", "read_password_file", "resolve_target", "run",
           "sampler_factory", "configure_logging", "env_password"]
