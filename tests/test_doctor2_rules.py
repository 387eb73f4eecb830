"""Issue #12's rules on synthetic production-scale Snapshots: output buffers, burst leaks, a growing fan-out."""

from __future__ import annotations

import random

from connguard.analysis.diagnosis import diagnose
from test_analysis_rules import PROD, TARGET, client, serious, snapshot

MB = 2 ** 20


def anon(i: int, host: str, age: int, idle: int) -> str:
    """A connection opened without CLIENT SETNAME or SETINFO (no name, no lib-name)."""
    return client(i, host, age, idle).replace(" lib-name=redis-py lib-ver=5.0.1", " lib-name= lib-ver=")


def with_buffers(line: str, omem: int) -> str:
    return line + f" obl=0 oll={omem // 16384} omem={omem} tot-mem={omem + 20_000}"



def test_a_burst_leak_beside_a_named_pool_is_named_before_anything_idles_past_the_threshold():
    rng = random.Random(3)
    lines = [client(i, "10.0.0.8", 86_400, rng.randint(0, 1), name="orders-api") for i in range(60)]
    lines += [anon(100 + i, "10.0.0.8", 120 + rng.randint(0, 1), 120) for i in range(300)]  # one burst, 2 min ago
    lines += [client(1000 + i, f"10.0.1.{i % 4}", 90_000, rng.randint(0, 2), name="web") for i in range(80)]
    first = snapshot(lines, maxclients=2000, taken_at=1000.0)
    diag = diagnose(first, snapshot(lines, maxclients=2000, taken_at=1005.0), PROD, TARGET)  # no longer growing
    assert serious(diag) == {"connection_leak"}
    leak = diag.finding("connection_leak")
    assert leak.hosts == ("10.0.0.8",) and "no client name" in " ".join(leak.evidence["burst"]["10.0.0.8"])
    kill = next(a.command for a in leak.actions if (a.command or "").startswith("connguard kill"))
    assert "--source 10.0.0.8 --idle " in kill
    assert int(kill.split("--idle ")[1].split()[0]) >= 100, "reaches the burst (idle >= 120 s), never the busy pool"


def test_pools_opened_together_with_their_idle_part_named_alike_stay_pool_oversize():
    rng = random.Random(4)
    lines = []
    for h in range(4):  # 4 x 230 opened at deploy; 40 of each busy, the rest idle since then - same names
        for j in range(230):
            busy = j < 40
            lines.append(client(h * 1000 + j, f"10.0.2.{h}", 86_400 + rng.randint(0, 3),
                                rng.randint(0, 2) if busy else 86_400, name="checkout"))
    diag = diagnose(snapshot(lines, maxclients=1000), None, PROD, TARGET)
    assert "connection_leak" not in serious(diag) and "pool_oversize" in serious(diag)


def test_one_host_holding_most_slots_idle_since_opened_is_a_leak_or_an_abandoned_pool():
    lines = [client(i, "10.0.0.9", 3_600, 3_600, name="reports") for i in range(600)]
    lines += [client(1000 + i, "10.0.1.1", 90_000, 0, name="web") for i in range(50)]
    diag = diagnose(snapshot(lines, maxclients=1000), None, PROD, TARGET)
    leak = diag.finding("connection_leak")
    assert leak is not None and leak.severity != "info" and leak.evidence["abandoned_pile"] == ["10.0.0.9"]
    assert "abandoned pool" in leak.summary


def test_a_young_pile_whose_first_command_fell_in_the_next_second_is_still_left_after_open():
    """CLIENT LIST's age and idle are whole seconds of one cached clock: a batch whose handshake was read in
    the second after its accept reads idle = age - 1 (3 of 4 s, 75 %). Seconds old, that tick must not turn
    a leak into a pool (a live leak-under-storm run once read exactly this)."""
    from connguard.analysis.diagnosis import DoctorSettings
    quick = DoctorSettings(interval_s=1.5, idle_threshold_s=2.0)
    lines = [client(i, "127.0.0.5", 5, 5, name="orders-worker") for i in range(45)]
    lines += [client(100 + i, "127.0.0.5", 4, 3, name="orders-worker") for i in range(9)]  # the lagging batch
    lines += [client(200 + i, "127.0.0.6", 6, 0, name="web") for i in range(2)]
    before, after = snapshot(lines, maxclients=60, taken_at=1000.0), snapshot(lines, maxclients=60, taken_at=1001.5)
    diag = diagnose(before, after, quick, TARGET)
    leak = diag.finding("connection_leak")
    assert leak is not None and leak.hosts == ("127.0.0.5",) and leak.evidence["abandoned"] == 54
    assert "pool_oversize" not in diag.causes
    # At age 2 one tick is ambiguous (used a full second after opening, or in the same instant): not counted.
    young = diagnose(snapshot([client(i, "127.0.0.5", 2, 1) for i in range(54)], maxclients=60), None, quick, TARGET)
    assert young.finding("connection_leak") is None


def _fanout(n: int, start: int = 0) -> list[str]:
    return [client(start + i, f"10.3.{i // 250}.{i % 250 + 1}", 30 + i % 60, 1, name="lambda") for i in range(n)]


def test_a_young_fanout_growing_below_the_line_warns_with_a_forecast_and_a_still_one_does_not():
    grown = diagnose(snapshot(_fanout(650), maxclients=1000, taken_at=1000.0),
                     snapshot(_fanout(720), maxclients=1000, taken_at=1010.0), PROD, TARGET)
    fan = grown.finding("serverless_fanout")
    assert grown.capacity.ratio < 0.8 and fan.severity == "warning"
    assert fan.evidence["growing"]["used_delta"] == 70 and 0 < fan.evidence["growing"]["seconds_to_full"] < 60
    still = diagnose(snapshot(_fanout(720), maxclients=2000, taken_at=1000.0),
                     snapshot(_fanout(720), maxclients=2000, taken_at=1010.0), PROD, TARGET)
    assert still.finding("serverless_fanout").severity == "info" and still.finding("serverless_fanout").evidence["growing"] is None


def test_output_buffers_found_by_omem_and_skipped_when_info_says_none_is_large():
    lines = [client(i, "10.0.0.20", 500, 0, name="web") for i in range(30)]
    lines.append(with_buffers(client(99, "10.0.0.21", 600, 600, name="feed", flags="P", cmd="subscribe", sub=1),
                              40 * MB))
    lines = [ln if "omem=" in ln else with_buffers(ln, 0) for ln in lines]
    diag = diagnose(snapshot(lines, maxclients=1000), None, PROD, TARGET)
    f = diag.finding("output_buffer_bloat")
    assert f is not None and f.severity == "warning" and f.hosts == ("10.0.0.21",)
    assert f.evidence["top"][0]["omem"] == 40 * MB and f.evidence["top"][0]["sub"] == 1
    assert serious(diag) == {"output_buffer_bloat"}


def test_small_output_buffers_are_not_a_finding():
    lines = [with_buffers(client(i, "10.0.0.20", 500, 0, name="web"), 16_384) for i in range(30)]
    assert diagnose(snapshot(lines, maxclients=1000), None, PROD, TARGET).finding("output_buffer_bloat") is None
