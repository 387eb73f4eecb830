"""`connguard exporter`: serve Prometheus metrics for one server (/metrics) or a fleet (/probe?target=…)."""

from __future__ import annotations

import os
from dataclasses import replace

import click

from connguard.analysis.findings import DoctorSettings
from connguard.commands._common import FiniteNumber, handle_errors, idle_threshold_option
from connguard.errors import BadArguments
from connguard.settings import DIAGNOSE_EVERY_S, EXPORTER_CONNECT_TIMEOUT_S, TOP_SOURCES


@click.command("exporter", short_help="Serve connguard's view of a server as Prometheus metrics.")
@click.option("--listen", default="127.0.0.1:9187", show_default=True, help="HOST:PORT to serve on.")
@click.option("--target", "target_url", default=None,
              help="The server /metrics reports (default $REDIS_URL; none: /metrics has only the exporter's own).")
@click.option("--password-file", type=click.Path(dir_okay=False), default=None,
              help="File whose first line is the password for every target (else $REDISCLI_AUTH).")
@click.option("--auth-file", type=click.Path(dir_okay=False), default=None,
              help="Per-target passwords: lines `redis://[user@]host:port PASSWORD`.")
@click.option("--top-sources", type=FiniteNumber(0, 1000, integer=True), default=TOP_SOURCES, show_default=True,
              help="Client hosts with their own series; the rest fold into source=\"other\".")
@click.option("--diagnose-every", "diagnose_every_s", type=FiniteNumber(0, 86_400), default=DIAGNOSE_EVERY_S,
              show_default=True, help="Seconds between two runs of the doctor's rules per target.")
@click.option("--clients-every", "clients_every_s", type=FiniteNumber(0, 86_400), default=0.0, show_default=True,
              help="Minimum seconds between two CLIENT LISTs per target; the 1%-of-server-time budget may stretch it.")
@idle_threshold_option("Seconds idle after which a connection counts as idle.")
@click.option("--window", "window_s", type=FiniteNumber(1, 86_400), default=60.0, show_default=True,
              help="Seconds of history the doctor's rules compare (growth, churn).")
@click.option("--target-idle", "target_idle_s", type=FiniteNumber(1, 86_400 * 7), default=600.0, show_default=True,
              help="Close a target's connection after this many seconds without a scrape.")
@click.option("--max-targets", type=FiniteNumber(1, 100_000, integer=True), default=100, show_default=True,
              help="Targets held at once; a probe beyond this answers connguard_probe_error{reason=\"max_targets\"}.")
@click.option("--connect-timeout", "connect_timeout_s", type=FiniteNumber(0, 60, low_open=True),
              default=EXPORTER_CONNECT_TIMEOUT_S, show_default=True,
              help="Socket timeout of a connection attempt and of each command. A scrape makes at most one attempt, "
              "and only once the target's reconnect backoff (1 s doubling to 30 s) allows.")
@handle_errors
def exporter_command(listen: str, target_url: str | None, password_file: str | None, auth_file: str | None,
                     top_sources: int, diagnose_every_s: float, clients_every_s: float, idle_threshold_s: float,
                     window_s: float, target_idle_s: float, max_targets: int, connect_timeout_s: float) -> None:
    """Prometheus exporter: one held connection per target, the doctor's verdict as connguard_cause,
    bounded per-source series. Read only. Needs the `exporter` extra (prometheus-client)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise BadArguments("the exporter needs prometheus-client: pip install 'connguard[exporter]'") from None
    from connguard.monitor import exporter as ex
    from connguard.monitor.exporter_targets import ExporterSettings, TargetRegistry
    from connguard.target import parse_target

    settings = ExporterSettings(
        top_sources=top_sources, diagnose_every_s=diagnose_every_s, clients_every_s=clients_every_s,
        target_idle_s=target_idle_s, max_targets=max_targets, window_s=window_s, connect_timeout_s=connect_timeout_s,
        doctor=DoctorSettings(idle_threshold_s=idle_threshold_s, top=top_sources),
    )
    password = ex.read_password_file(password_file) if password_file else ex.env_password()
    creds = ex.Credentials(default=password, per_endpoint=ex.read_auth_file(auth_file) if auth_file else {})
    default = None
    url = target_url or os.environ.get("REDIS_URL")
    if url:  # the operator's own URL (flag or environment) may carry a password; a probe URL may not
        default = parse_target(url, env={})
        if default.password is None:
            user, pw = creds.for_target(default)
            default = replace(default, username=user, password=pw)
    ex.configure_logging()
    exporter = ex.Exporter(TargetRegistry(settings, ex.sampler_factory(settings)), creds, default)
    server = ex.bind(listen, exporter)  # a port in use fails here: one line, exit 3
    try:
        ex.run(server, exporter)
    except KeyboardInterrupt:
        pass
