"""Real Prometheus and Alertmanager (Debian's binaries) on free loopback ports, a webhook receiver, and the
shipped rules and Alertmanager route rewritten to a faster clock, so the shipped files are what is tested.

Time scale: every duration in the shipped rules (`for:`, `keep_firing_for:`, range selectors, the 3600 s and
7200 s horizons) is divided by `factor`, so 20 turns the 10 minutes of ConnguardExhaustionSoon's `for:` into 30 s
and its 5 minute trend into 15 s; scrapes and evaluations run every 0.5 s to keep several samples per window.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import yaml

from connguard.lab.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")


def _scaled(text: str, factor: float) -> str:
    seconds = int(text[:-2] if text.endswith("ms") else text[:-1]) * _UNITS["ms" if text.endswith("ms") else text[-1]]
    return f"{max(1, round(seconds / factor * 1000))}ms"


def scaled_rules(factor: float, source: Path = RULES) -> str:
    """The shipped rules with every duration divided by `factor`: `for:` / `keep_firing_for:` values, PromQL
    range selectors, and the horizons in seconds of the forecast alert and recording rule (3600, 7200)."""
    text = source.read_text()
    text = re.sub(r"(?m)^(\s*(?:for|keep_firing_for):\s*)(\S+)$", lambda m: m.group(1) + _scaled(m.group(2), factor), text)
    text = re.sub(r"\[(\d+(?:ms|s|m|h|d))\]", lambda m: f"[{_scaled(m.group(1), factor)}]", text)
    return re.sub(r"\b(3600|7200)\b", lambda m: f"{int(m.group(1)) / factor:g}", text)


def scaled_alertmanager(webhook_url: str, factor: float, source: Path = ALERTMANAGER_YML) -> str:
    """The shipped route and inhibition, its timers divided by `factor` (at least 1 s for group_interval:
    Alertmanager's flush) and every receiver pointed at `webhook_url`."""
    config = yaml.safe_load(source.read_text())

    def walk(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = _scaled(route[key], factor)
        for child in route.get("routes", []):
            walk(child)

    walk(config["route"])
    config["route"]["group_wait"] = "500ms"
    config["route"]["group_interval"] = "1s"
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
    return yaml.safe_dump(config)


def wait_for(check: Callable[[], Any], what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


class Daemon:
    """A subprocess on a free loopback port, its log in `workdir`, stopped by its own PID."""

    def __init__(self, name: str, argv: list[str], workdir: Path, ready_url: str) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_for(lambda: self._ready(ready_url), f"{name} ready", 30)

    def _ready(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}") from None
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()


class Prometheus(Daemon):
    def __init__(self, workdir: Path, scrape_configs: list[dict[str, Any]], *, rules: str | None = None,
                 alertmanager_port: int | None = None, interval: str = "1s") -> None:
        self.port = free_port()
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": scrape_configs,
        }
        if rules is not None:
            (workdir / "rules.yml").write_text(rules)
            config["rule_files"] = ["rules.yml"]
        if alertmanager_port is not None:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        super().__init__("prometheus", [
            PROMETHEUS or "prometheus", f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h", "--rules.alert.resend-delay=1s"], workdir,
            f"http://127.0.0.1:{self.port}/-/ready")

    def api(self, path: str, **params: str) -> Any:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        body = _get_json(f"http://127.0.0.1:{self.port}/api/v1/{path}{query}")
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["state"] == state]


class Alertmanager(Daemon):
    def __init__(self, workdir: Path, config: str) -> None:
        self.port = free_port()
        (workdir / "alertmanager.yml").write_text(config)
        super().__init__("alertmanager", [
            ALERTMANAGER or "prometheus-alertmanager", f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'alertmanager-data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address="], workdir, f"http://127.0.0.1:{self.port}/-/ready")


class Webhook:
    """Alertmanager's webhook receiver: every notification it POSTs, kept in order."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook._lock:
                    hook.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/connguard"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.notifications)

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """Every alert of every notification so far whose labels include `labels`, with the notification's
        status and groupKey added."""
        out = []
        for note in self.received():
            for alert in note["alerts"]:
                if all(alert["labels"].get(k) == v for k, v in labels.items()):
                    out.append({**alert, "groupKey": note["groupKey"]})
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def probe_job(name: str, targets: list[str], exporter: str, **extra: Any) -> dict[str, Any]:
    """docs/exporter.md's scrape config: the redis:// URL becomes ?target= and `instance`."""
    return {
        "job_name": name, "metrics_path": "/probe", "static_configs": [{"targets": targets}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": exporter},
        ] + extra.pop("more_relabel_configs", []),
        **extra,
    }
