"""Shared fixtures."""

from __future__ import annotations

import pytest

from auditor.world import World, build_world


@pytest.fixture(scope="session")
def world() -> World:
    """The default embedded world and its seed-1 retrain, built once into ``$UNLEARN_AUDIT_CACHE`` and reused."""
    return build_world(progress=print, retrains=(1,))
