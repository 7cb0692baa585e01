"""Shared fixtures for the reward tests: a private cache per test, nothing from the network."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Point ``SRPO_CACHE`` at a fresh folder so tests never share built-in models."""
    cache = tmp_path / "srpo-cache"
    monkeypatch.setenv("SRPO_CACHE", str(cache))
    return cache
