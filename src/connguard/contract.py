"""The public contract's names, in one place: JSON schema names, exit codes, probe-error reasons, cause names and
severities. docs/contract.md documents them; tests/test_contract.py checks the two agree.

Pure constants: importable from anywhere (analysis, probe, commands, the exporter) without a driver."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Monitoring-plugins exit codes, so a command can serve as a Nagios/Icinga check (docs/contract.md)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# -- schema names of the --json objects, NDJSON lines and recordings -------------------------------------------
STATUS_SCHEMA = "connguard.status/1"
DOCTOR_SCHEMA = "connguard.doctor/1"
KILL_SCHEMA = "connguard.kill/1"
CONFIG_SCHEMA = "connguard.config/1"
PLAN_SCHEMA = "connguard.plan/1"
PLAN_DEPLOYMENT_SCHEMA = "connguard.plan/2"  # plan --deployment: a deployment by its components
WATCH_SCHEMA = "connguard.watch/1"
WATCH_ALERT_SCHEMA = "connguard.watch.alert/1"  # --alert-cmd's stdin
FLEET_SCHEMA = "connguard.fleet/1"
STORM_SCHEMA = "connguard.storm/1"
RECORDING_SCHEMA = "connguard.recording/1"  # a recording's header line
OBSERVATION_SCHEMA = "connguard.observation/1"  # one line per tick of a recording
EVENT_SCHEMA = "connguard.event/1"  # something the tool did between observations (watch's kills)
SNAPSHOT_SCHEMA = "connguard.snapshot/1"  # the raw captures of tests/testdata

SCHEMAS = (STATUS_SCHEMA, DOCTOR_SCHEMA, KILL_SCHEMA, CONFIG_SCHEMA, PLAN_SCHEMA, PLAN_DEPLOYMENT_SCHEMA, WATCH_SCHEMA, WATCH_ALERT_SCHEMA,
           FLEET_SCHEMA, STORM_SCHEMA, RECORDING_SCHEMA, OBSERVATION_SCHEMA, EVENT_SCHEMA, SNAPSHOT_SCHEMA)

# -- the `reason` label of connguard_probe_error (the exporter) --------------------------------------------------
PROBE_ERROR_REASONS = ("auth", "refused", "not_redis", "tls", "bad_target", "unreachable", "max_targets", "internal")

# -- findings ------------------------------------------------------------------------------------------------------
SEVERITIES = ("info", "warning", "critical")  # worst last
CAUSES = (
    "exhausted", "connection_leak", "pool_oversize", "serverless_fanout", "retry_storm",
    "maxclients_too_low", "fd_limit", "internal_connections", "blocked_clients",
    "output_buffer_bloat",  # slow consumers (subscribers, replicas) whose output buffers hold memory
    "capacity_pressure",  # usage at or over the warning line that no other cause explains
    "monitor_sessions",  # MONITOR clients holding slots (and CPU: every command is copied to each)
    "framework_connections",  # advisory (info): connections that look like Celery, RQ, Django's cache
)
