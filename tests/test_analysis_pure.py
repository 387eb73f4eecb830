"""The analysis is pure: importing the verdict's module loads no I/O library (redis-py, rich, click), so it runs
anywhere a recording can be read. Checked in a fresh interpreter: this test process has them all loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
IO_LIBRARIES = ("redis", "rich", "click")


def loaded_after(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return [m for m in json.loads(out.stdout) if m.split(".")[0] in IO_LIBRARIES]


@pytest.mark.parametrize("module", ["connguard.probe.model", "connguard.probe.census", "connguard.probe.build",
                                    "connguard.analysis.window", "connguard.analysis.forecast",
                                    "connguard.target_url", "connguard.settings"])
def test_the_snapshot_model_and_the_window_import_no_io_library(module):
    assert loaded_after(f"import {module}") == []


def test_the_diagnosis_imports_no_io_library():
    assert loaded_after("import connguard.analysis.diagnosis") == []
