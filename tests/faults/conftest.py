"""Each fault case gets its own stack and an execution log its functions write to."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.ledger import Ledger, Report


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    log = tmp_path / "executions.log"
    monkeypatch.setenv("AUTAN_FAULTS_LOG", str(log))  # workers inherit it
    return Ledger(log)


def record(case: str, report: Report) -> None:
    """Print the case's ledger; append it to AUTAN_LEDGER_OUT when set (for reports)."""
    line = report.line(case)
    print(line)
    out = os.environ.get("AUTAN_LEDGER_OUT")
    if out:
        with open(out, "a") as file:
            file.write(line + "\n")
