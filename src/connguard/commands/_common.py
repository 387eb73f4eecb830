"""Options and error handling every command shares, so none invents its own exit codes or messages."""

from __future__ import annotations

import functools
import json
import math
import sys
from typing import TYPE_CHECKING, Any, Callable, NoReturn, TypeVar

import click

from connguard.errors import BadArguments, ConnguardError, Denied, ExitCode

if TYPE_CHECKING:
    from connguard.target import Target

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BY_STATUS = {"ok": ExitCode.OK, "warning": ExitCode.WARNING, "critical": ExitCode.CRITICAL, "unknown": ExitCode.UNKNOWN}


class FiniteNumber(click.ParamType):
    """A number checked at the CLI edge: finite (no nan, no inf) and within [low, high] (or (low, high] when
    `low_open`). click's FloatRange lets NaN through (every comparison with NaN is false), so this does not use it."""

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 integer: bool = False) -> None:
        self.low, self.high, self.low_open, self.integer = low, high, low_open, integer
        self.name = "integer" if integer else "seconds"

    def _range(self) -> str:
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = "" if self.high is None else f"<= {self.high:g}"
        return " and ".join(p for p in (lo, hi) if p)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number: float = value
        else:
            try:
                number = float(str(value))
            except ValueError:
                self.fail(f"{value!r} is not {'a whole number' if self.integer else 'a number'}", param, ctx)
            if self.integer and math.isfinite(number):
                try:
                    number = int(str(value))
                except ValueError:
                    self.fail(f"{value!r} is not a whole number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = self.high is not None and number > self.high
        if too_low or too_high:
            self.fail(f"{value!r} is out of range: it must be {self._range()}", param, ctx)
        return int(number) if self.integer else float(number)


class OneLineCommand(click.Command):
    """A usage error (unknown option, bad number) is one line on stderr and exit 3 (UNKNOWN), like every
    other bad input; click's own format is four lines and exit 2, which DESIGN.md reserves for CRITICAL."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            # The same line cli.py's group prints, so it reads alike however the command is invoked.
            click.echo(f"connguard: bad arguments: {' '.join(exc.format_message().split())} "
                       f"(see: {ctx.command_path} --help)", err=True)
            sys.exit(int(ExitCode.UNKNOWN))


SECONDS = FiniteNumber(0, 86_400 * 7, low_open=True)  # any positive duration up to a week


def url_argument(func: F) -> F:
    return click.argument("url", required=False, metavar="[URL]")(func)


INSECURE_KEY = "connguard.insecure"
INSECURE_WARNING = ("connguard: warning: TLS certificate verification is OFF for {where} ({how}): the server's "
                    "identity is not checked")


def insecure_option(func: F) -> F:
    """--insecure: over rediss://, do not verify the server's certificate (said on stderr at each run)."""
    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        ctx.meta[INSECURE_KEY] = value
        return value
    return click.option("--insecure", is_flag=True, expose_value=False, callback=remember,
                        help="rediss:// only: do not verify the server's TLS certificate (= ?ssl_cert_reqs=none); "
                             "said on stderr.")(func)


def cli_target(url: str | None) -> "Target":
    """The command's target: parsed, with --insecure applied, and a line on stderr whenever certificate
    verification is off (an opt-out nobody should forget is on)."""
    from connguard.target import insecure, parse_target, verification_off
    from connguard.discovery.sentinel_url import is_sentinel_url

    if is_sentinel_url(url):  # the primary the Sentinels name now (watch follows it across failovers itself)
        from connguard.discovery.sentinel import current_primary
        from connguard.discovery.sentinel_url import parse_sentinel_url

        target = current_primary(parse_sentinel_url(url))  # type: ignore[arg-type]
    else:
        target = parse_target(url)
    ctx = click.get_current_context(silent=True)
    flag = bool(ctx and ctx.meta.get(INSECURE_KEY))
    if flag:
        target = insecure(target)
    if verification_off(target):
        click.echo(INSECURE_WARNING.format(where=target.redacted, how="--insecure" if flag else "ssl_cert_reqs=none"),
                   err=True)
    return target


def connect_timeout_option(func: F) -> F:
    return click.option(
        "--connect-timeout", "connect_timeout_s", type=FiniteNumber(0, 3600), default=10.0, show_default=True,
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


def denied(exc: Exception, what: str = "") -> Denied:
    """A server's refusal of one command (NOPERM from an ACL, mostly), as the one-line error."""
    text = " ".join(str(exc).split())[:160]
    return Denied(f"{what + ': ' if what else ''}the server refused a command connguard needs ({text})")


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
        except Exception as err:
            import redis.exceptions  # here, not at the top: `connguard --version` must not import redis-py

            if isinstance(err, redis.exceptions.ResponseError):  # an ACL denied a command nobody expected to fail
                fail(denied(err))
            raise

    return wrapper  # type: ignore[return-value]
