"""The `celery` lab scenario: a real Celery worker (prefork, Redis broker and Redis result backend) whose
children each open their own result-backend connection, a pile the doctor should name as Celery's.

It needs the `frameworks` extra (celery, kombu, packaging); without it the scenario says how to install it
and stops with exit 3 before anything starts."""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

from connguard.errors import LabError

if TYPE_CHECKING:  # scenario_specs registers this scenario, so it is imported from there, not here
    from connguard.lab.scenario_specs import Built, Setup

INSTALL = "pip install 'connguard[frameworks]' (or: pip install celery packaging)"
CONCURRENCY = 20  # prefork children: each holds one result-backend connection once it has stored a result
# 10 broker + 20 result-backend connections = 30 of 36, over the 0.8 warning line; while the tasks run, the
# producer (4) and the scenario's observer (1) fit beside them (35), or some children would be refused.
MAXCLIENTS = 36


def _installed(module: str) -> bool:
    """Without importing it (a lab run need not pay for Celery's import to learn it is there)."""
    if module in sys.modules:
        return True  # kombu swaps its module object for a lazy one whose __spec__ is None: find_spec fails
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:
        return True


def require_celery() -> None:
    """One line and exit 3 when Celery (or kombu's Redis transport's `packaging`) is missing."""
    missing = [m for m in ("celery", "kombu", "packaging") if not _installed(m)]
    if missing:
        raise LabError(f"the celery scenario needs {', '.join(missing)}: {INSTALL}")


def celery_pile(s: "Setup") -> "Built":
    """Start the worker, run tasks until every child has stored a result, leave it running (stopped by the
    scenario's exit stack, by its process group)."""
    from connguard.lab import framework_runs as fr
    from connguard.lab.scenario_specs import Built

    require_celery()
    auth = f":{s.password}@" if s.password else ""
    url = f"redis://{auth}{s.host}:{s.port}"
    dep = fr.CeleryDeployment(url, fr.CeleryConfig("prefork", CONCURRENCY, True))
    s.stack.callback(dep.close)
    obs = fr.observer(url)
    s.log(f"starting a Celery worker: prefork, concurrency {CONCURRENCY}, Redis broker (db 0) and result backend (db 1)")
    s.stack.enter_context(dep.worker())
    if fr.settle(obs, at_least=3, timeout_s=60) < 3:
        raise LabError("the Celery worker did not connect within 60 s")
    held = 0
    for _ in range(4):  # until every child has stored a result (a busy machine leaves some children idle)
        dep.produce(4 * CONCURRENCY)
        held = fr.settle(obs)
        if held >= 10 + CONCURRENCY:
            break
    obs.close()  # the pile is the worker's alone
    return Built(summary=f"a Celery prefork worker (concurrency {CONCURRENCY}) with a Redis result backend holds "
                         f"{held} connections: about 10 for the broker and one result-backend connection per child",
                 offenders=(s.host,))
