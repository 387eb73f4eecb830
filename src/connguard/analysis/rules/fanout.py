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
# Below the warning line, a fan-out still warns when the window shows it growing: each new function instance
# brings its own connection, so the next burst of invocations fills the rest faster than anyone can react.
EARLY_RATIO = 0.6
YOUNG_S = 900  # sources whose median age is under this are transient instances, not long-lived app servers
MIN_RISE = 2  # connections over the window, and at least 1% of maxclients


def growth_outlook(f: Facts, small_total_now: int) -> dict[str, object] | None:
    """The window's trend of usage while the fan-out grows: the forecast where the window is long enough,
    else the straight line through its ends (rough). None when usage did not rise."""
    from connguard.analysis.forecast import forecast

    if f.rates is None or not f.maxclients:
        return None
    rise = f.rates.used_delta
    if rise < max(MIN_RISE, 0.01 * f.maxclients) or f.rates.interval_s <= 0:
        return None
    points = [(snap.clock, float(snap.used)) for snap in f.window]
    fc = forecast(points, f.maxclients)
    slope = rise / f.rates.interval_s
    rough = max(0.0, (f.maxclients - f.used) / slope) if slope > 0 else None
    return {
        "used_delta": rise, "interval_s": f.rates.interval_s, "per_min": round(slope * 60, 1),
        "seconds_to_full": round(fc.seconds_to_full, 1) if fc.seconds_to_full is not None else (
            round(rough, 1) if rough is not None else None),
        "confidence": fc.confidence if fc.confidence != "none" else "rough",
        "method": "forecast" if fc.confidence != "none" else f"two ends of the window ({fc.reason})",
    }


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
        "slots_held": small_total, "sources": len(small), "connections": small_total, "share_of_app_connections": round(share, 2),
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
    outlook = growth_outlook(f, small_total) if median_age <= YOUNG_S else None
    evidence["growing"] = outlook
    if outlook is not None:
        if f.ratio >= EARLY_RATIO:
            floor = "warning"
        eta = outlook["seconds_to_full"]
        when = f"full in about {_duration(eta)} at this pace ({outlook['confidence']})" if eta is not None else ""
        summary += (f" It is growing: {outlook['used_delta']:+d} connections in {outlook['interval_s']:g}s "
                    f"({outlook['per_min']:+g}/min){', ' + when if when else ''}.")
        if f.ratio < f.settings.warning_ratio and "Meanwhile" not in " ".join(a.title for a in actions):
            wanted = round_up(len(small) * SMALL * 1.5 + (f.used - small_total) + 200)
            actions += raise_maxclients(f, max(wanted, f.maxclients + 200),
                                        "Before it fills, size maxclients to concurrency x per-instance + reserve")
    return Finding("serverless_fanout", f.ratio_severity(floor), min(confidence, 0.95), summary, evidence, tuple(actions))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
