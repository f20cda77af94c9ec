"""Fixtures shared by the unit tests: a fake GitHub (with GitHub's limits) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runnerfleet.sim.github import FakeGitHub


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub()
    await gh.start()
    yield gh
    await gh.stop()
