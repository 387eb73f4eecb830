"""Discovery: a Sentinel URL, a Cluster seed or a fleet file becomes many Targets for the same pipeline.

- `sentinel_url`: parse `redis+sentinel://…` (pure).
- `sentinel`: ask the Sentinels for the primary, its replicas and each other.
- `cluster`: CLUSTER SHARDS (7.0+) or CLUSTER NODES (6.2) into one member per node.
- `fleet_file`: a plain or TOML list of URLs (pure parse; bad lines become Problems, not failures).
- `fanout`: a bounded thread pool that never lets one target's failure stop the others.
- `summary`: pure roll-up of per-target results: risk order, worst exit code, the fleet-wide cause.
"""

from typing import Any

__all__ = ["Member", "Problem", "Topology"]


def __getattr__(name: str) -> Any:
    # Lazy: `status` reads two pure helpers of this package (seeds, sentinel_url) on every run and needs none of
    # the model's dataclasses.
    if name in __all__:
        from connguard.discovery import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
