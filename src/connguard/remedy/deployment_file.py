"""The deployment file (TOML, already parsed): [server] and [[component]] tables checked field by field into a
Deployment, or one DeploymentError line naming the component and the field. Pure."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

from connguard.remedy.deployment import FORMULAS, KINDS, Component, Deployment, ServerSide
from connguard.remedy.limits import RESERVED_FDS
from connguard.remedy.plan import MAX_COUNT, MAX_FD_LIMIT, MAX_MAXCLIENTS

POOLS = ("prefork", "threads", "gevent", "eventlet", "solo")
CACHE_BACKENDS = ("django", "django-redis")


class DeploymentError(ValueError):
    """A deployment file that cannot be planned: one line, naming the component and field."""


# Fields each kind accepts besides name, kind and instances (anything else in its table is a typo).
FIELDS: dict[str, tuple[str, ...]] = {
    "celery": ("pool", "concurrency", "broker", "result_backend", "broker_pool_limit", "redis_max_connections"),
    "celery-beat": ("broker", "result_backend"),
    "celery-client": ("processes", "broker", "result_backend", "waits_for_results"),
    "flower": ("broker",),
    "gunicorn": ("workers", "threads", "max_connections"),
    "uwsgi": ("workers", "threads", "max_connections"),
    "django-cache": ("backend", "workers", "threads", "max_connections"),
    "rq": ("workers",),
    "redis-py": ("processes", "pool_size", "max_connections"),
}


# -- parsing and validation ------------------------------------------------------------------------------

def _int(where: str, key: str, value: Any, low: int, high: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DeploymentError(f"{where}: {key} = {value!r} must be a whole number")
    if not low <= value <= high:
        raise DeploymentError(f"{where}: {key} = {value} must be between {low} and {high:,}")
    return value


def component_from(table: Mapping[str, Any], index: int) -> Component:
    if not isinstance(table, Mapping):
        raise DeploymentError(f"component {index}: must be a [[component]] table")
    name = table.get("name")
    where = f"component {index}" + (f" ({name!r})" if name else "")
    if not isinstance(name, str) or not name.strip():
        raise DeploymentError(f"{where}: needs a name")
    kind = table.get("kind")
    if kind not in FORMULAS:
        raise DeploymentError(f"{where}: kind = {kind!r} is not one of {', '.join(KINDS)}")
    allowed = {"name", "kind", "instances", *FIELDS[kind]}
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise DeploymentError(f"{where}: {kind} has no field {unknown[0]!r} (it takes {', '.join(sorted(allowed))})")
    values: dict[str, Any] = {"name": name, "kind": kind, "instances": _int(where, "instances", table.get("instances", 1), 1)}
    for key in FIELDS[kind]:
        if key not in table:
            continue
        v = table[key]
        if key == "pool":
            if v not in POOLS:
                raise DeploymentError(f"{where}: pool = {v!r} is not one of {', '.join(POOLS)}")
        elif key == "broker":
            if v != "redis":
                raise DeploymentError(f"{where}: broker = {v!r}: only a Redis broker takes Redis connections; "
                                      "leave the component out")
        elif key == "result_backend":
            if v not in ("redis", "", "none"):
                raise DeploymentError(f"{where}: result_backend = {v!r} must be \"redis\" or absent")
            v = v or None if v != "none" else None
        elif key == "waits_for_results":
            if not isinstance(v, bool):
                raise DeploymentError(f"{where}: waits_for_results = {v!r} must be true or false")
        elif key == "backend":
            if v not in CACHE_BACKENDS:
                raise DeploymentError(f"{where}: backend = {v!r} is not one of {', '.join(CACHE_BACKENDS)}")
        elif key == "concurrency":
            v = _int(where, key, v, 1, 10_000)
        elif key in ("max_connections", "redis_max_connections", "broker_pool_limit"):
            v = _int(where, key, v, 0 if key == "broker_pool_limit" else 1)
        else:
            v = _int(where, key, v, 1)
        values[key] = v
    if kind == "redis-py" and "max_connections" in values:
        if "pool_size" in table:
            raise DeploymentError(f"{where}: give pool_size or max_connections, not both")
        values["pool_size"] = values.pop("max_connections")
    return Component(**values)


def server_from(table: Mapping[str, Any]) -> ServerSide:
    if not isinstance(table, Mapping):
        raise DeploymentError("[server] must be a table")
    names = {f.name for f in fields(ServerSide)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise DeploymentError(f"[server]: no field {unknown[0]!r} (it takes {', '.join(sorted(names))})")
    limits = {"maxclients": (1, MAX_MAXCLIENTS), "fd_limit": (RESERVED_FDS + 1, MAX_FD_LIMIT)}
    values = {k: _int("[server]", k, v, *limits.get(k, (0, MAX_COUNT))) for k, v in table.items()}
    if values.get("cluster_nodes") == 1:
        raise DeploymentError("[server]: cluster_nodes = 1 is not a cluster: give the number of nodes (>= 2), or 0")
    return ServerSide(**values)


def deployment_from(doc: Mapping[str, Any]) -> Deployment:
    """A parsed TOML document -> Deployment; DeploymentError (one line) on anything it cannot plan."""
    unknown = sorted(set(doc) - {"component", "server"})
    if unknown:
        raise DeploymentError(f"unknown top-level key {unknown[0]!r}: the file has [server] and [[component]] tables")
    tables = doc.get("component")
    if not isinstance(tables, list) or not tables:
        raise DeploymentError("no [[component]] tables: describe at least one component (name, kind, instances)")
    comps = tuple(component_from(t, i + 1) for i, t in enumerate(tables))
    seen: set[str] = set()
    for c in comps:
        if c.name in seen:
            raise DeploymentError(f"two components are named {c.name!r}: names must be unique")
        seen.add(c.name)
    return Deployment(comps, server_from(doc.get("server", {})))
