"""Fixtures the end-to-end tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from harness import MailmuxProcess


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def started() -> AsyncIterator[list[MailmuxProcess]]:
    """Processes a test starts are stopped even when the test fails."""
    processes: list[MailmuxProcess] = []
    yield processes
    for process in processes:
        await process.stop()
