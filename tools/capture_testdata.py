"""Capture real INFO / CONFIG GET / CLIENT LIST from every server version into tests/testdata/<label>/.

Run: python tools/capture_testdata.py [--out tests/testdata] [--only redis-7.0.15]

For each server binary on this machine it starts a throwaway server (maxclients 100) with one real
replica and a unix socket, opens a representative crowd (named idle clients, unnamed idle, active,
blocked BLPOP, pub/sub, MONITOR, a client inside MULTI, a unix-socket client, a lib-name client),
then takes one capture over connguard's own held connection and writes the golden pair:
the raw replies (info_all.txt, client_list.txt, config_maxclients.txt) beside snapshot.json.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

from connguard.lab.crowd import Crowd
from connguard.lab.servers import ServerProcess, find_binaries, resp_command
from connguard.probe import build_snapshot, capture
from connguard.probe.info import parse_info
from connguard.probe.serialize import SNAPSHOT_FILE, dump_snapshot, write_raw_capture
from connguard.target import open_connection, parse_target

ROOT = Path(__file__).resolve().parent.parent


def _raw(sock: socket.socket, *commands: tuple[str, ...], replies: int) -> socket.socket:
    """Send commands on a raw socket and read at least `replies` reply lines."""
    sock.settimeout(5)
    sock.sendall(b"".join(resp_command(*c) for c in commands))
    data = b""
    while data.count(b"\r\n") < replies:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return sock


def _wait_replicas(conn, count: int, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if parse_info(conn.execute("INFO", "replication").decode()).connected_slaves >= count:
            return
        time.sleep(0.1)
    raise SystemExit(f"replica did not connect within {timeout_s:.0f}s")


def capture_one(binary, out: Path) -> Path:  # type: ignore[no-untyped-def]
    folder = out / binary.label
    with tempfile.TemporaryDirectory(prefix="connguard-capture-") as tmp:
        sock_path = str(Path(tmp, "redis.sock"))
        primary = ServerProcess(binary, maxclients=100, extra_args=("--unixsocket", sock_path, "--unixsocketperm", "700"))
        with primary, Crowd("127.0.0.1", primary.port) as crowd:
            replica = ServerProcess(binary, replicaof=("127.0.0.1", primary.port))
            with replica:
                crowd.open(3, source="127.0.0.2", name="orders-worker")
                crowd.open(2, source="127.0.0.3")
                crowd.open(2, source="127.0.0.4", kind="active", name="api=v2")  # '=' inside a name
                crowd.open(1, source="127.0.0.5", kind="blocked", name="queue-consumer")
                crowd.open(1, source="127.0.0.6", kind="pubsub")
                crowd.open(1, source="127.0.0.7", name="with-lib", lib_name="orders-lib")  # 7.2+/Valkey keep it
                extra: list[socket.socket] = []
                try:
                    monitor = socket.create_connection(("127.0.0.1", primary.port), source_address=("127.0.0.8", 0))
                    extra.append(_raw(monitor, ("MONITOR",), replies=1))
                    multi = socket.create_connection(("127.0.0.1", primary.port), source_address=("127.0.0.9", 0))
                    extra.append(_raw(multi, ("MULTI",), ("SET", "k", "v"), replies=2))
                    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    unix.connect(sock_path)
                    extra.append(_raw(unix, ("CLIENT", "SETNAME", "unix-client"), replies=1))
                    time.sleep(1.1)  # so idle and age are not all zero
                    with open_connection(parse_target(primary.url)) as conn:
                        _wait_replicas(conn, 1)
                        raw = capture(conn)
                        snap = build_snapshot(raw, own_client_id=conn.client_id)
                finally:
                    for s in extra:
                        s.close()
    write_raw_capture(raw, folder)
    dump_snapshot(snap, folder / SNAPSHOT_FILE)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "testdata")
    parser.add_argument("--only", action="append", help="capture only this label (repeatable)")
    args = parser.parse_args(argv)
    binaries = [b for b in find_binaries() if not args.only or b.label in args.only]
    if not binaries:
        print("no server binaries found", file=sys.stderr)
        return 1
    for binary in binaries:
        folder = capture_one(binary, args.out)
        print(f"{binary.label}: wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
