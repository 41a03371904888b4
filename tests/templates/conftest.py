"""The templated app, deployed without workers: each test's provider starts them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtime.core import Settings
from tests.stack import Stack


@pytest.fixture(scope="module")
async def templated_stack(settings: Settings) -> AsyncIterator[Stack]:
    async with Stack.running(settings, "tests.apps.templated", start_workers=False) as stack:
        yield stack
