"""The --json objects every command prints: the doctor's Diagnosis, and the one error object for all commands."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from connguard.errors import ConnguardError, ExitCode

if TYPE_CHECKING:  # the doctor's modules are heavy; `status` and `kill` need only the error object
    from connguard.analysis.diagnosis import Diagnosis

STATUS_BY_EXIT = {ExitCode.OK: "ok", ExitCode.WARNING: "warning", ExitCode.CRITICAL: "critical",
                  ExitCode.UNKNOWN: "unknown"}


def diagnosis_json(diag: "Diagnosis") -> dict[str, Any]:
    return diag.to_dict()


def error_object(schema: str, target: str, err: ConnguardError, *, reachable: bool = False,
                 nulls: Iterable[str] = (), **fields: Any) -> dict[str, Any]:
    """The error object of every --json command: its schema, the redacted target (never a raw URL), the
    status the exit code stands for (a full server is critical, anything else unknown), the one-line error
    and its kind; `nulls` are the command's own fields, null because they could not be known."""
    return {"schema": schema, "target": target, "status": STATUS_BY_EXIT[err.exit_code], "reachable": reachable,
            "error": err.message, "error_kind": err.kind, **{k: None for k in nulls}, **fields}


def error_json(target: str, err: ConnguardError) -> dict[str, Any]:
    """The doctor's error object (schema connguard.doctor/1): every contract field, unknowable ones null."""
    from connguard.analysis.diagnosis import SCHEMA

    return error_object(SCHEMA, target, err, nulls=("server", "capacity", "rates", "sources"), findings=[])
