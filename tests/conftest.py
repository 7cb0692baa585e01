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
