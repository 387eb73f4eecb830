"""Real throwaway servers for tests: every version found on this machine, each stopped by its own PID.

The suite runs under pytest-xdist (`-n auto`, see pyproject.toml). What keeps it safe there:
- every server port comes from the worker's own port slot (`connguard.lab.servers.free_port`), and a server
  that loses its port to another process is restarted on a fresh one;
- tests whose module-scoped fixture builds something (a fleet, a cluster, a matrix) run on one worker
  (an automatic `xdist_group` per module), and so do all users of one session-scoped topology;
- tests that leave the process (a server, the lab, a CLI run, a socket) are marked `live` automatically, so
  `pytest -m "not live" -n 0` is the quick, pure loop;
- `slow` tests' modules run first, so a parallel run does not end waiting on one long test.
"""

from __future__ import annotations

import atexit
import inspect
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerBinary, ServerProcess, find_binaries
from connguard.lab.topology import ClusterSet, SentinelSet

BINARIES: list[ServerBinary] = find_binaries()


def _by_flavor(flavor: str, version_prefix: str = "") -> list[ServerBinary]:
    return [b for b in BINARIES if b.flavor == flavor and b.version.startswith(version_prefix)]


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package once, on the controller. The CLI tests start `python -m connguard` hundreds of times;
    where PYTHONDONTWRITEBYTECODE is set (some CI images and sandboxes) each start would compile every module
    again (about a quarter of a `status` run's CPU). Python still reads .pyc files written here."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it
        return
    import compileall

    import connguard

    try:
        compileall.compile_dir(str(Path(connguard.__file__).parent), quiet=2)
    except OSError:
        pass  # a read-only install: it was compiled when installed


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: two workers per core, at most eight (each worker has its own port slot, see lab/servers.py).
    Most of this suite waits (observation windows, timeouts, servers starting), so on 2 cores 4 workers measured
    6:39 against 9:08 for 2, with the same failures. PYTEST_XDIST_AUTO_NUM_WORKERS=N still decides, as in xdist."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    return max(1, min(2 * (os.cpu_count() or 1), 8))


def pytest_report_header(config: pytest.Config) -> str:
    found = ", ".join(f"{b.label} ({b.origin})" for b in BINARIES) or "none"
    return f"connguard test servers: {found}"


# -- markers: `live` from what a test uses, `xdist_group` for shared module/session fixtures -------------------

# Fixtures that start a server (directly or through another fixture listed here).
LIVE_FIXTURES = frozenset({"binary", "default_binary", "start_server", "server", "crowd_for", "full_server"})
# Code that reaches outside the test process without those fixtures: servers or the lab, a CLI or another
# process, a socket. A test or fixture whose source (or a tests/ helper it calls) says one of these is live too,
# so `-m "not live"` is pure, in-process code. A new helper that starts servers belongs here (or, better, uses
# `start_server`).
_LIVE_SOURCE = re.compile(
    r"\b(ServerProcess|SentinelSet|ClusterSet|BINARIES|REDIS7|REDIS62|find_binaries|default_binary|run_scenario"
    r"|start_live|live_scenario|Prometheus|run_exporter|subprocess|Popen|sys\.executable|socket|tmux|openssl"
    r"|CliRunner|free_port)\b|\"demo\"|\"lab\"")


TESTS_DIR = Path(__file__).resolve().parent


def _test_helper(obj: object) -> bool:
    """A function, class or module written in tests/ (not pytest's, not connguard's)."""
    path = getattr(obj, "__file__", None) or getattr(inspect.getmodule(obj), "__file__", None)
    return bool(path) and Path(path).resolve().parent == TESTS_DIR


@lru_cache(maxsize=None)
def _source_starts_servers(func: Callable[..., object], depth: int = 3) -> bool:
    """Whether a test, a fixture or a helper of tests/ they call (a few levels down) leaves the process."""
    try:
        if _LIVE_SOURCE.search(inspect.getsource(func)):
            return True
    except (OSError, TypeError):
        return False
    code = getattr(func, "__code__", None)
    if depth == 0 or code is None:
        return False
    names = set(code.co_names) | {n for c in code.co_consts if inspect.iscode(c) for n in c.co_names}
    env = getattr(func, "__globals__", {})
    for name in names:
        obj = env.get(name)
        if inspect.ismodule(obj) and _test_helper(obj):  # `import doctor_scenarios as ds`: ds.<name>
            found = [getattr(obj, n) for n in names if callable(getattr(obj, n, None))]
        else:
            found = [obj] if callable(obj) else []
        for helper in found:
            if (inspect.isfunction(helper) or inspect.isclass(helper)) and _test_helper(helper) and helper is not func:
                if _source_starts_servers(helper, depth - 1):
                    return True
    return False


def _is_live(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    if names & LIVE_FIXTURES:
        return True
    func = getattr(item, "function", None)
    if func is not None and _source_starts_servers(func):
        return True
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        for fixturedef in defs:
            if fixturedef.baseid and _source_starts_servers(fixturedef.func):  # baseid "": a plugin's fixture
                return True
    return False


def _shared_group(item: pytest.Item) -> str | None:
    """The xdist group of a test that shares a built fixture: the fixture's name for a session-scoped one from
    SHARED_SESSION_FIXTURES (every user on one worker, so it is built once), else the module for a
    module-scoped one (so the module's fixture is built once)."""
    info = getattr(item, "_fixtureinfo", None)
    sessions: set[str] = set()
    module_scoped = False
    for name, defs in (info.name2fixturedefs.items() if info else ()):
        fixturedef = defs[-1]
        if not fixturedef.baseid:  # pytest's and plugins' own fixtures (tmp_path_factory, ...)
            continue
        if fixturedef.scope == "session" and name in SHARED_SESSION_FIXTURES:
            sessions.add(f"session-{name}")
        elif fixturedef.scope in ("module", "package", "class"):
            module_scoped = True
    if sessions:
        return "+".join(sorted(sessions))
    return item.nodeid.split("::")[0] if module_scoped else None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_live(item):
            item.add_marker(pytest.mark.live)
        if not any(item.iter_markers("xdist_group")):
            group = _shared_group(item)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))
    # xdist hands out work in collection order (with --no-loadscope-reorder): modules with slow tests first, then
    # those with a shared fixture (a group runs as one unit), then the rest, so a long test does not finish last.
    # Whole modules move, never single tests, so a module-scoped fixture is still built once in a serial run.
    rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        here = 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("xdist_group") else 2
        rank[module] = min(rank.get(module, 2), here)
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])


# -- waiting for a condition, not for a fixed time ---------------------------------------------------------------

T = TypeVar("T")


def eventually(observe: Callable[[], T], done: Callable[[T], bool], timeout_s: float, interval_s: float = 0.1) -> T:
    """Observe until `done(observation)` or the deadline; returns the last observation either way, so the test's
    own asserts on it say what was wrong. A fixed sleep waits its whole length on a fast machine and may be too
    short on a loaded one; this waits only as long as needed, up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = observe()
        if done(seen) or time.monotonic() >= deadline:
            return seen
        time.sleep(interval_s)


# -- servers ----------------------------------------------------------------------------------------------------

@pytest.fixture(params=BINARIES, ids=[b.label for b in BINARIES])
def binary(request: pytest.FixtureRequest) -> ServerBinary:
    """Parametrizes a test over every server version on this machine."""
    return request.param


@pytest.fixture
def default_binary() -> ServerBinary:
    """One server, for tests whose point is not version differences: Redis 7.0 if there, else the first found."""
    if not BINARIES:
        pytest.skip("no server binary found")
    preferred = _by_flavor("redis", "7.") or BINARIES
    return preferred[0]


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def start_server() -> Iterator[ServerFactory]:
    """Factory: start_server(binary, maxclients=..., nofile=..., replicaof=...). All are stopped after the test."""
    started: list[ServerProcess] = []

    def start(binary: ServerBinary, **kwargs: object) -> ServerProcess:
        server = ServerProcess(binary, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def server(binary: ServerBinary, start_server: ServerFactory) -> ServerProcess:
    """A plain server of each version, maxclients 200."""
    return start_server(binary, maxclients=200)


@pytest.fixture
def crowd_for() -> Iterator[Callable[[ServerProcess], Crowd]]:
    """Factory: crowd_for(server) -> Crowd of raw clients; all closed after the test."""
    crowds: list[Crowd] = []

    def make(server: ServerProcess) -> Crowd:
        crowd = Crowd("127.0.0.1", server.port, password=server.password)
        crowds.append(crowd)
        return crowd

    yield make
    for crowd in crowds:
        crowd.close()


@pytest.fixture
def fresh_guard_registry() -> Iterator[None]:
    """The guard keeps process-wide state per endpoint; each guard test starts and ends with none."""
    from connguard.guard.registry import REGISTRY

    REGISTRY.reset()
    yield
    REGISTRY.reset()


@pytest.fixture
def full_server(default_binary: ServerBinary, start_server: ServerFactory, crowd_for: Callable[[ServerProcess], Crowd]):
    """A server with maxclients 10: a monitor holds one slot, a leak from 127.0.0.5 holds the other nine."""
    import redis

    server = start_server(default_binary, maxclients=10)
    monitor = redis.Redis(host="127.0.0.1", port=server.port, single_connection_client=True)
    monitor.ping()
    crowd = crowd_for(server)
    leak = crowd.open(9, source="127.0.0.5")
    assert len(leak.sockets) == 9
    yield server, monitor, crowd, leak
    monitor.close()


# -- session-scoped builds (one per xdist worker; their users share one worker through `xdist_group`) ----------

# Session fixtures whose users are grouped on one worker, so the thing is built once per run.
SHARED_SESSION_FIXTURES = frozenset({"lab_cluster", "lab_sentinels"})
REDIS7 = _by_flavor("redis", "7.") or BINARIES

LAB_CLUSTER_MAXCLIENTS = 60
LAB_SENTINELS_PASSWORD = "s3ntinel-pw-7"


@pytest.fixture(scope="session")
def lab_cluster() -> Iterator[ClusterSet]:
    """A real 3-primary Redis 7 cluster (maxclients 60, no replicas), built once for every test that reads it.
    A test may fill a node or move a slot, but leaves the cluster as it found it (every slot on its node,
    no node added, no connection held); a test that cannot, builds its own `ClusterSet`."""
    if not REDIS7:
        pytest.skip("no server binary found")
    with ClusterSet(REDIS7[0], primaries=3, maxclients=LAB_CLUSTER_MAXCLIENTS) as cluster:
        yield cluster


@contextmanager
def cluster_node_down(cluster: ClusterSet, index: int) -> Iterator[ServerProcess]:
    """Stop one node of a (shared) cluster for the body of the `with`, then start it again on its port with its
    own nodes.conf (same ID and slots) and wait until every node says cluster_state:ok."""
    node = cluster.nodes[index]
    saved = Path(tempfile.mkdtemp(prefix="connguard-nodes-"))
    conf = saved / "nodes.conf"
    conf.write_bytes(Path(node.workdir or ".", "nodes.conf").read_bytes())
    node.stop()
    try:
        yield node
    finally:
        back = ServerProcess(node.binary, port=node.port, maxclients=node.maxclients, extra_args=(
            "--cluster-enabled", "yes", "--cluster-config-file", str(conf), "--cluster-node-timeout", "5000"))
        cluster.nodes[index] = back.start()
        atexit.register(shutil.rmtree, saved, True)  # the node keeps writing its nodes.conf there until it stops
        cluster._wait_ok(30.0)


@pytest.fixture(scope="session")
def lab_sentinels() -> Iterator[SentinelSet]:
    """A Redis 7 primary (maxclients 100, password LAB_SENTINELS_PASSWORD), two replicas and three Sentinels,
    built once. Read-only: a test that fails over or stops a member builds its own `SentinelSet`."""
    if not REDIS7:
        pytest.skip("no server binary found")
    with SentinelSet(REDIS7[0], replicas=2, sentinels=3, maxclients=100, password=LAB_SENTINELS_PASSWORD) as s:
        yield s


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway PKI made once per worker with `openssl`: a CA (`ca`, `ca.key`), a server certificate for IP
    127.0.0.1 signed by it (`server`, `server.key`), a client certificate (`client`, `client.key`) and a
    second, unrelated CA (`other-ca`). Keys are files: `pki["server"]` is server.pem."""
    if not shutil.which("openssl"):
        pytest.skip("needs openssl")
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "1", "-subj", f"/CN=connguard test {ca}", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=connguard-client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)
    return {p.stem if p.suffix == ".pem" else p.name: p for p in d.iterdir()}
