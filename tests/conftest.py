"""Shared fixtures."""

from __future__ import annotations

import pytest

from auditor.world import World, build_world


@pytest.fixture(scope="session")
def world() -> World:
    """The default embedded world, built once into ``$UNLEARN_AUDIT_CACHE`` (or the user cache) and reused."""
    return build_world(progress=print)
