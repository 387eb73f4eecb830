"""The `connguard doctor --json` object (schema connguard.doctor/1), for a Diagnosis or an error."""

from __future__ import annotations

from typing import Any

from connguard.analysis.diagnosis import SCHEMA, Diagnosis
from connguard.errors import ConnguardError


def diagnosis_json(diag: Diagnosis) -> dict[str, Any]:
    return diag.to_dict()


def error_json(target: str, err: ConnguardError) -> dict[str, Any]:
    """Every contract field, unknowable ones null: for bad URLs, refusals, auth failures, not-Redis."""
    return {
        "schema": SCHEMA, "target": target, "status": "unknown", "reachable": False, "error": err.message,
        "server": None, "capacity": None, "rates": None, "sources": None, "findings": [],
    }
