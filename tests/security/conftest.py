"""Fixtures of the security tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtime.core import Settings
from tests.stack import Stack


@pytest.fixture(scope="module")
async def guarded_stack(settings: Settings) -> AsyncIterator[Stack]:
    """The guarded app, deployed without workers: tests start worker processes of it."""
    async with Stack.running(settings, "tests.apps.guarded", start_workers=False) as stack:
        yield stack


@pytest.fixture
async def tamper_stack(settings: Settings) -> AsyncIterator[Stack]:
    """The tamper app, deployed afresh for one test that damages it."""
    async with Stack.running(settings, "tests.apps.tamper", start_workers=False) as stack:
        yield stack
