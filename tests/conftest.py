"""Real throwaway servers for tests: every version found on this machine, each stopped by its own PID."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerBinary, ServerProcess, find_binaries

BINARIES: list[ServerBinary] = find_binaries()


def _by_flavor(flavor: str, version_prefix: str = "") -> list[ServerBinary]:
    return [b for b in BINARIES if b.flavor == flavor and b.version.startswith(version_prefix)]


def pytest_report_header(config: pytest.Config) -> str:
    found = ", ".join(f"{b.label} ({b.origin})" for b in BINARIES) or "none"
    return f"connguard test servers: {found}"


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
