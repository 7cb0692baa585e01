"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest

# Under pytest-xdist (make test runs two workers) each worker gets a ZenML config folder of its own
# below the one the Makefile made, so the workers never share a local store.
# A worker's main module has no file, from which ZenML would read the source root: name it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    if os.environ.get("ZENML_CONFIG_PATH"):
        os.environ["ZENML_CONFIG_PATH"] = os.path.join(os.environ["ZENML_CONFIG_PATH"],
                                                       os.environ["PYTEST_XDIST_WORKER"])
    os.environ.setdefault("ZENML_CUSTOM_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session", autouse=True)
def _sqlite_commits_without_fsync():
    """The tests' ZenML stores are SQLite files thrown away afterwards: their commits skip the fsync.

    On this machine's disk a synchronous commit takes ~18 ms and a tiny pipeline run makes ~300 of them;
    a process that stops still leaves every commit in the file (the OS has it), only a power cut would not.
    Stores in other processes (the ``zenml`` CLI, the local server) keep ZenML's settings.
    """
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def no_fsync(connection, _record):
        if isinstance(connection, sqlite3.Connection):
            connection.execute("PRAGMA synchronous=OFF")

    event.listen(Engine, "connect", no_fsync)
    yield
    event.remove(Engine, "connect", no_fsync)


def isolated_zenml(folder):
    """An isolated ZenML client in ``folder``: its own config, local SQLite store and local artifact store.

    Analytics are off, so nothing reaches the network. The global singletons are reset before
    and after, so tests do not share ZenML state.
    """
    from zenml.client import Client
    from zenml.config.global_config import GlobalConfiguration

    mp = pytest.MonkeyPatch()
    mp.setenv("ZENML_CONFIG_PATH", str(folder / "zenml-config"))
    mp.setenv("ZENML_ANALYTICS_OPT_IN", "false")
    GlobalConfiguration._reset_instance()
    Client._reset_instance()
    try:
        yield Client()
    finally:
        GlobalConfiguration._reset_instance()
        Client._reset_instance()
        mp.undo()


@pytest.fixture
def zenml_client(tmp_path):
    """An isolated ZenML client for one test (see :func:`isolated_zenml`)."""
    yield from isolated_zenml(tmp_path)


@pytest.fixture(scope="module")
def module_zenml_client(tmp_path_factory):
    """One isolated ZenML store shared by a module's tests (see :func:`isolated_zenml`)."""
    yield from isolated_zenml(tmp_path_factory.mktemp("zenml"))


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


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory, tiny_flux_dir):
    """Every tiny family (``builtin:tiny-<family>``) saved with ``save_pretrained`` once per session: family -> folder."""
    from srpo.models.tiny_families import TINY_FAMILY_BUILDERS, save_tiny_family

    root = tmp_path_factory.mktemp("families")
    built = {name.removeprefix("tiny-"): save_tiny_family(name, root / name) for name in TINY_FAMILY_BUILDERS}
    return {"flux": tiny_flux_dir, **built}
