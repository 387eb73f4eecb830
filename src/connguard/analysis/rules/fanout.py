"""serverless_fanout: many distinct, transient sources, each with one or two connections."""

from __future__ import annotations

from connguard.analysis.facts import Facts
from connguard.analysis.findings import Action, Finding
from connguard.analysis.rules._actions import raise_maxclients, round_up
from connguard.analysis.sources import host_key

SMALL = 2  # connections per source that look like one function instance
MIN_SOURCES = 20
MIN_SHARE = 0.5  # of application connections
MAX_HOSTS = 200  # named in the evidence; the count says how many there are


def check(f: Facts) -> Finding | None:
    apps = [s for s in f.app_sources if s.host != "unix"]
    small = [s for s in apps if s.connections <= SMALL]
    if len(small) < MIN_SOURCES:
        return None
    app_total = sum(s.connections for s in apps)
    small_total = sum(s.connections for s in small)
    share = small_total / max(1, app_total)
    if share < MIN_SHARE:
        return None
    ages = sorted(s.median_age_s for s in small)
    median_age = ages[len(ages) // 2]
    churn = f.rates is not None and f.rates.connections_received > 0
    confidence = 0.6 + 0.2 * (share >= 0.8) + 0.1 * churn
    summary = (
        f"Serverless fan-out: {len(small)} distinct sources hold {small_total} connections, 1-{SMALL} each "
        f"({share:.0%} of application connections); give each function instance one module-level client "
        "or put a proxy in front; killing them does not help."
    )
    evidence = {
        "sources": len(small), "connections": small_total, "share_of_app_connections": round(share, 2),
        "median_age_s": median_age, "used": f.used, "maxclients": f.maxclients,
        "connections_received_per_s": f.rates.connections_received_per_s if f.rates else None,
        "hosts": sorted((s.host for s in small), key=host_key)[:MAX_HOSTS],
        "names": sorted({n for s in small for n in s.names})[:5],
    }
    actions = [
        Action(
            "Create the client once per function instance, at module level, with a pool of 1-2 "
            "(not per invocation), so warm invocations reuse it",
            'r = redis.Redis.from_url(os.environ["REDIS_URL"], max_connections=2)  # module level', False,
        ),
        Action("Put a connection proxy (Envoy Redis proxy, twemproxy, a managed proxy) between the functions "
               "and Redis so thousands of instances share a few server connections", None, False),
    ]
    if f.maxclients and f.ratio >= f.settings.warning_ratio:
        wanted = round_up(len(small) * SMALL * 1.5 + (f.used - small_total) + 200)
        actions += raise_maxclients(f, max(wanted, f.maxclients + 200),
                                    "Meanwhile size maxclients to concurrency x per-instance + reserve")
    # Half the limit held by one-connection sources is a warning even below the 0.8 line: fan-out
    # grows with concurrency, and the next burst of invocations fills the rest.
    floor = "warning" if f.maxclients and small_total >= 0.5 * f.maxclients else "info"
    return Finding("serverless_fanout", f.ratio_severity(floor), min(confidence, 0.95), summary, evidence, tuple(actions))
