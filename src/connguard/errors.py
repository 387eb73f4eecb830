"""The one exception hierarchy: each error knows its exit code and its one-line message."""

from __future__ import annotations

from connguard.contract import ExitCode  # noqa: F401  (its one home, connguard.contract; re-exported here)


class ConnguardError(Exception):
    """Base of every error connguard reports to a person. `str(err)` is the one line to print."""

    exit_code: ExitCode = ExitCode.UNKNOWN
    kind: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def line(self) -> str:
        return f"connguard: {self.kind}: {self.message}"


class BadTarget(ConnguardError):
    """The URL does not parse or names an unsupported scheme."""

    kind = "bad target"


class BadArguments(ConnguardError):
    """An option or setting makes no sense (negative threshold, unknown scenario, ...)."""

    kind = "bad arguments"


class Unreachable(ConnguardError):
    """Nothing answered at the target (refused, timed out, DNS, TLS mismatch)."""

    kind = "unreachable"


class AuthFailed(ConnguardError):
    """The server wants a password, or the one given is wrong."""

    kind = "auth failed"


class NotRedis(ConnguardError):
    """Something answered, but it does not speak RESP."""

    kind = "not redis"


class Denied(ConnguardError):
    """The server (an ACL) refused a command connguard needs for what was asked; says which, and what works."""

    kind = "denied"


class ServerFull(ConnguardError):
    """The server refused us with `max number of clients reached` until --connect-timeout ran out."""

    kind = "server full"
    exit_code = ExitCode.CRITICAL


class LabError(ConnguardError):
    """The lab could not start or keep a throwaway server (missing binary, server died)."""

    kind = "lab"
