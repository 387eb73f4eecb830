"""Options and error handling every command shares, so none invents its own exit codes or messages."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, NoReturn, TypeVar

import click

from connguard.errors import BadArguments, ConnguardError, ExitCode

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BY_STATUS = {"ok": ExitCode.OK, "warning": ExitCode.WARNING, "critical": ExitCode.CRITICAL, "unknown": ExitCode.UNKNOWN}


def url_argument(func: F) -> F:
    return click.argument("url", required=False, metavar="[URL]")(func)


def connect_timeout_option(func: F) -> F:
    return click.option(
        "--connect-timeout", "connect_timeout_s", type=float, default=10.0, show_default=True,
        help="Seconds to keep retrying (with jittered backoff) while the server refuses for maxclients.",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, nothing else.")(func)


def emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def fail(err: ConnguardError) -> NoReturn:
    click.echo(err.line(), err=True)
    sys.exit(int(err.exit_code))


def handle_errors(func: F) -> F:
    """Turn a ConnguardError into its one line on stderr and its exit code; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConnguardError as err:
            fail(err)
        except ValueError as err:  # settings rejected at construction say which and why
            fail(BadArguments(str(err)))

    return wrapper  # type: ignore[return-value]
