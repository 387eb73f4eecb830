"""Throwaway servers under a parallel suite: ports from the worker's own slot, and a server that loses its port
to another process starts again on a fresh one (lab/servers.py)."""

from __future__ import annotations

import socket

import pytest

from connguard.lab import servers
from connguard.lab.servers import PORT_RANGE_END, PORT_RANGE_START, PortTaken, ServerProcess, free_port
from connguard.lab.topology import CLUSTER_BUS_OFFSET


def _slot_bounds(worker: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    slot = servers._port_slot()
    per = (PORT_RANGE_END - PORT_RANGE_START) // servers.PORT_SLOTS
    return PORT_RANGE_START + slot * per, PORT_RANGE_START + (slot + 1) * per


def test_each_xdist_worker_takes_ports_from_its_own_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1", "gw3"):
        low, high = _slot_bounds(worker, monkeypatch)
        ports = {free_port() for _ in range(20)}
        assert len(ports) == 20 and all(low <= p < high for p in ports), (worker, sorted(ports))
        seen[worker] = ports
    assert not seen["gw0"] & seen["gw1"] and not seen["gw1"] & seen["gw3"]
    assert PORT_RANGE_END + CLUSTER_BUS_OFFSET <= 32768  # bus ports too stay below the default ephemeral range


def test_a_port_in_use_is_skipped_and_a_pair_leaves_room_for_the_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    _slot_bounds("gw2", monkeypatch)
    taken = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", taken))
        listener.listen()
        assert servers._cursor is not None
        servers._cursor.next -= 1  # the walk comes back to the port that is now in use
        assert free_port() != taken  # skipped: something listens there
    port = free_port(paired_offset=CLUSTER_BUS_OFFSET, avoid={taken})
    assert port != taken
    for p in (port, port + CLUSTER_BUS_OFFSET):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", p))  # both free


def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(default_binary) -> None:
    server = ServerProcess(default_binary, maxclients=10)
    picked = server.port
    with socket.socket() as squatter:  # another process took the port between the pick and the start
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", picked))
        squatter.listen()
        try:
            server.start()
            assert server.alive() and server.port != picked
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
                conn.sendall(b"PING\r\n")
                assert conn.recv(16).startswith(b"+PONG")
        finally:
            server.stop()


def test_a_port_answered_by_another_server_is_never_taken_for_ours(default_binary, start_server) -> None:
    other = start_server(default_binary)
    moved = ServerProcess(default_binary)
    moved.port = other.port  # as if two processes had picked the same free port
    try:
        moved.start()
        assert moved.port != other.port and moved.alive()  # its own port, not the other server's PONG
    finally:
        moved.stop()
    with pytest.raises(PortTaken, match="answered by another server"):  # a port given explicitly is not changed
        ServerProcess(default_binary, port=other.port).start()
