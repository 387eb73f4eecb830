"""One home for connguard's defaults. Every dataclass field, function parameter and CLI option that has a
default reads it from here, so `--help`, the library and the docs cannot drift apart.

Pure constants: no imports, cheap to import from anywhere (analysis, probe, commands)."""

from __future__ import annotations

# -- connecting --------------------------------------------------------------------------------------------
CONNECT_TIMEOUT_S = 10.0  # ride out a full server this long before judging it from outside (status, doctor, watch)
EXPORTER_CONNECT_TIMEOUT_S = 2.0  # a scrape must answer within Prometheus's scrape timeout
CROWD_CONNECT_TIMEOUT_S = 5.0  # the lab's load clients

# -- what counts as idle -----------------------------------------------------------------------------------
IDLE_THRESHOLD_S = 300.0  # a plain connection idle this long is a leak candidate (doctor, watch, exporter, kill)

# -- sampling ----------------------------------------------------------------------------------------------
DOCTOR_INTERVAL_S = 5.0  # seconds between the doctor's Snapshots
WATCH_INTERVAL_S = 2.0  # seconds between watch's ticks
INTERVAL_MAX_S = 3600.0  # the longest --interval either accepts
INTERVAL_MIN_S = 0.1  # the shortest --interval: faster than this is load on the server, not insight
DIAGNOSE_EVERY_S = 10.0  # watch and the exporter run the doctor's rules at most this often
TOP_SOURCES = 10  # sources listed per target
NAMES_LISTED = 5  # client names / libraries / users shown per source

# -- the forecast and its alert ----------------------------------------------------------------------------
FORECAST_WINDOW_S = 600.0  # the recent past the forecast fits
FORECAST_ALERT_S = 900.0  # exhaustion_soon fires when full in under this (critical under a third)

# -- the incremental window --------------------------------------------------------------------------------
WINDOW_MAX_SNAPSHOTS = 8  # full Snapshots kept for the doctor's rules (a 10k-client Snapshot is megabytes)
WINDOW_SPAN_S = 60.0  # ... spread over this much recent time
WINDOW_MAX_POINTS = 1200  # (time, used) points kept for the forecast, whatever the tick rate

# Fleet fan-out (discovery/fanout.py); here so the CLI's option declarations read them without importing discovery.
DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 512  # each worker holds one connection and a thread; more only thrashes
