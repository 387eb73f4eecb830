"""Throwaway topologies on loopback: a primary with replicas behind Sentinels, and a real Redis Cluster.

Built on `connguard.lab.servers.ServerProcess`, so every process is stopped by its own PID and its temp dir
is removed. Used by the tests and the fleet benchmark; nothing here touches a server it did not start."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from connguard.errors import LabError
from connguard.lab.servers import ServerBinary, ServerProcess, free_port

CLUSTER_BUS_OFFSET = 10_000  # Redis listens for the cluster bus on port + 10000
MAX_CLUSTER_PORT = 65_535 - CLUSTER_BUS_OFFSET
CLUSTER_SLOTS = 16_384
SENTINEL_MASTER = "mymaster"


def free_cluster_port(rng: random.Random | None = None, taken: set[int] | None = None) -> int:
    """A free port <= 55535 whose cluster-bus port (+10000) is free too (from this process's port slot;
    `rng` is no longer used and kept for callers)."""
    return free_port(paired_offset=CLUSTER_BUS_OFFSET, avoid=taken)


class SentinelProcess(ServerProcess):
    """`redis-server <conf> --sentinel` watching one primary. Sentinel needs a writable config file, which
    lives in the process's temp dir (so it goes away with it)."""

    def __init__(self, binary: ServerBinary, *, primary_port: int, master_name: str = SENTINEL_MASTER,
                 quorum: int = 2, down_after_ms: int = 5000, primary_password: str | None = None,
                 port: int | None = None) -> None:
        super().__init__(binary, port=port)
        self.primary_port = primary_port
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.primary_password = primary_password

    def command(self) -> list[str]:
        conf = Path(self.workdir or ".", "sentinel.conf")
        lines = [
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.primary_port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}",
            f"sentinel failover-timeout {self.master_name} 60000",
        ]
        if self.primary_password:
            lines.append(f"sentinel auth-pass {self.master_name} {self.primary_password}")
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)  # it may hold the primary's password
        return [
            self.binary.path, str(conf), "--sentinel",
            "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no",
            "--daemonize", "no", "--dir", self.workdir or ".", "--logfile", "server.log",
        ]


def _client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5,
                       single_connection_client=True, decode_responses=True)


def _wait(what: str, check, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.1)
    raise LabError(f"{what} not reached within {timeout_s:g}s" + (f" ({last})" if last else ""))


@dataclass
class SentinelSet:
    """A primary, its replicas and the Sentinels that watch it. `stop()` stops every process it started."""

    binary: ServerBinary
    replicas: int = 2
    sentinels: int = 3
    maxclients: int | None = None
    password: str | None = None
    master_name: str = SENTINEL_MASTER
    primary: ServerProcess | None = None
    replica_servers: list[ServerProcess] = field(default_factory=list)
    sentinel_servers: list[SentinelProcess] = field(default_factory=list)

    def start(self, timeout_s: float = 20.0) -> "SentinelSet":
        try:
            # No 5 s wait for more replicas before a diskless full sync (7.0's default): the lab's dataset is empty.
            self.primary = ServerProcess(self.binary, maxclients=self.maxclients, password=self.password,
                                         extra_args=(*self._auth_args(), "--repl-diskless-sync-delay", "0")).start()
            for _ in range(self.replicas):
                self.replica_servers.append(ServerProcess(
                    self.binary, maxclients=self.maxclients, password=self.password,
                    replicaof=("127.0.0.1", self.primary.port), extra_args=self._auth_args()).start())
            for _ in range(self.sentinels):
                self.sentinel_servers.append(SentinelProcess(
                    self.binary, primary_port=self.primary.port, master_name=self.master_name,
                    quorum=min(2, self.sentinels), primary_password=self.password).start())
            self.wait_settled(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _auth_args(self) -> tuple[str, ...]:
        return ("--masterauth", self.password) if self.password else ()

    def wait_settled(self, timeout_s: float) -> None:
        """Until every replica has finished its sync (its primary link is a client only from then on) and every
        Sentinel knows the primary, all replicas and all other Sentinels."""
        assert self.primary is not None
        primary = self.primary

        def settled() -> bool:
            for r in self.replica_servers:
                with _client(r.port, self.password) as c:
                    if c.info("replication").get("master_link_status") != "up":
                        return False
            for s in self.sentinel_servers:
                with _client(s.port) as c:
                    addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                    if not addr or int(addr[1]) != primary.port:
                        return False
                    if len(c.execute_command("SENTINEL", "REPLICAS", self.master_name)) < self.replicas:
                        return False
                    if len(c.execute_command("SENTINEL", "SENTINELS", self.master_name)) < self.sentinels - 1:
                        return False
            return True

        _wait("Sentinels agreeing on the primary, its replicas and each other", settled, timeout_s)

    @property
    def url(self) -> str:
        """The redis+sentinel:// URL of this set (with the data password, when there is one)."""
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinel_servers)
        return f"redis+sentinel://{auth}{hosts}/{self.master_name}"

    def processes(self) -> list[ServerProcess]:
        return [*self.sentinel_servers, *self.replica_servers, *([self.primary] if self.primary else [])]

    def stop(self) -> None:
        for proc in self.processes():
            proc.stop()

    def __enter__(self) -> "SentinelSet":
        return self if self.primary else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ClusterSet:
    """A real `--cluster-enabled yes` cluster: `primaries` nodes sharing the 16384 slots evenly, each with
    `replicas_per_primary` replicas, joined with CLUSTER MEET. Ports are <= 55535 (bus port +10000)."""

    binary: ServerBinary
    primaries: int = 3
    replicas_per_primary: int = 0
    maxclients: int | None = None
    nodes: list[ServerProcess] = field(default_factory=list)

    def start(self, timeout_s: float = 30.0) -> "ClusterSet":
        rng = random.Random()
        taken: set[int] = set()
        try:
            for _ in range(self.primaries * (1 + self.replicas_per_primary)):
                port = free_cluster_port(rng, taken)
                taken |= {port, port + CLUSTER_BUS_OFFSET}
                self.nodes.append(ServerProcess(
                    self.binary, port=port, maxclients=self.maxclients,
                    extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                "--cluster-node-timeout", "5000", "--repl-diskless-sync-delay", "0"),
                ).start())
            self._assign_slots()
            self._meet()
            self._wait_known(timeout_s)
            self._replicate()
            self._wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def primary_nodes(self) -> list[ServerProcess]:
        return self.nodes[: self.primaries]

    def _assign_slots(self) -> None:
        per = CLUSTER_SLOTS // self.primaries
        for i, node in enumerate(self.primary_nodes):
            first = i * per
            last = CLUSTER_SLOTS - 1 if i == self.primaries - 1 else first + per - 1
            with _client(node.port) as c:
                try:
                    c.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)  # 7.0+
                except redis.ResponseError:
                    c.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))  # 6.2

    def _meet(self) -> None:
        first = self.nodes[0]
        with _client(first.port) as c:
            for node in self.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)

    def _node_id(self, node: ServerProcess) -> str:
        with _client(node.port) as c:
            return str(c.execute_command("CLUSTER", "MYID"))

    def _wait_known(self, timeout_s: float) -> None:
        want = len(self.nodes)

        def everyone_knows() -> bool:
            for node in self.nodes:
                with _client(node.port) as c:
                    info = c.execute_command("CLUSTER", "INFO")
                    fields = dict(line.split(":", 1) for line in str(info).split() if ":" in line)
                    if int(fields.get("cluster_known_nodes", 0)) < want:
                        return False
            return True

        _wait(f"all {want} cluster nodes knowing each other", everyone_knows, timeout_s)

    def _replicate(self) -> None:
        ids = [self._node_id(p) for p in self.primary_nodes]
        replicas = self.nodes[self.primaries:]
        for i, node in enumerate(replicas):
            with _client(node.port) as c:
                c.execute_command("CLUSTER", "REPLICATE", ids[i % self.primaries])

    def _wait_ok(self, timeout_s: float) -> None:
        def all_ok() -> bool:
            for node in self.nodes:
                with _client(node.port) as c:
                    if "cluster_state:ok" not in str(c.execute_command("CLUSTER", "INFO")):
                        return False
                    if node in self.nodes[self.primaries:] and c.info("replication").get("master_link_status") != "up":
                        return False
            return True

        _wait("cluster_state:ok on every node", all_ok, timeout_s)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    def __enter__(self) -> "ClusterSet":
        return self if self.nodes else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["CLUSTER_BUS_OFFSET", "ClusterSet", "SentinelProcess", "SentinelSet", "free_cluster_port", "free_port"]
