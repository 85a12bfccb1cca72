"""Shared fixtures: salt-factories kept off 0.0.0.0 and out of the shared tmp dir; private services."""

import logging
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

from tests.support.paths import REPO
from tests.support.paths import TEST_ROOT

# harmless "I/O operation on closed file" noise from salt's logging at teardown
logging.raiseExceptions = False
sys.path.insert(0, str(REPO / "_utils"))

pytest_plugins = ["tests.support.services"]


@pytest.fixture(scope="session")
def test_root():
    TEST_ROOT.mkdir(exist_ok=True)
    path = tempfile.mkdtemp(prefix="run-", dir=TEST_ROOT)
    # private daemons drop privileges (mysql, nobody): they must be able to reach their dirs
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def salt_factories_config(test_root):
    return {"root_dir": str(test_root / "salt"), "slow_stop": False, "log_server_host": "127.0.0.1"}


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    # pytest creates --basetemp (.tmp/pytest) without its parents: a fresh clone has no .tmp yet
    TEST_ROOT.mkdir(exist_ok=True)
    # salt-factories' log server would bind 0.0.0.0: keep it on loopback
    log_server = config.pluginmanager.get_plugin("saltfactories-log-server")
    if log_server is not None:
        log_server.log_host = "127.0.0.1"


@pytest.fixture(scope="session")
def event_listener():
    """salt-factories' event listener, bound to loopback instead of 0.0.0.0."""
    from saltfactories.plugins.event_listener import EventListener

    listener = EventListener()
    listener.host = "127.0.0.1"
    listener.address = f"tcp://127.0.0.1:{listener.port}"
    with listener:
        yield listener
