"""The scaled app, deployed without workers: the tests' providers and scalers start them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtime.core import Settings
from tests.stack import Stack


@pytest.fixture(scope="module")
async def scaled_stack(settings: Settings) -> AsyncIterator[Stack]:
    async with Stack.running(settings, "tests.apps.scaled", start_workers=False) as stack:
        yield stack
