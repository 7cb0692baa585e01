"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def zenml_client(tmp_path, monkeypatch):
    """An isolated ZenML client: its own config folder, local SQLite store and local artifact store.

    Analytics are off, so nothing reaches the network. The global singletons are reset before
    and after, so tests do not share ZenML state.
    """
    from zenml.client import Client
    from zenml.config.global_config import GlobalConfiguration

    monkeypatch.setenv("ZENML_CONFIG_PATH", str(tmp_path / "zenml-config"))
    monkeypatch.setenv("ZENML_ANALYTICS_OPT_IN", "false")
    GlobalConfiguration._reset_instance()
    Client._reset_instance()
    try:
        yield Client()
    finally:
        GlobalConfiguration._reset_instance()
        Client._reset_instance()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Built-in tiny models are built once per test session into a temporary cache."""
    import os

    mp = pytest.MonkeyPatch()
    if "SRPO_CACHE" not in os.environ:
        mp.setenv("SRPO_CACHE", str(tmp_path_factory.mktemp("srpo-cache")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("ZENML_ANALYTICS_OPT_IN", "false")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory):
    """A tiny random FLUX pipeline saved with ``save_pretrained`` (built once per session)."""
    from srpo.models.tiny import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux", seed=0)
