"""The fleet cases keep a ledger as the fault cases do."""

from tests.faults.conftest import ledger

__all__ = ["ledger"]
