"""
Integration tier: a salt-factories master and two minions (app1, db2). The master serves the repo the
classic way (states + the _modules/_states/_pillar/_runners/_utils dirs as a file_roots source, then
saltutil.sync_all) and the rolestack ext_pillar from a copy of pillar.example/.
"""

import shutil

import pytest

from tests.support.paths import PILLAR_EXAMPLE
from tests.support.paths import REPO
from tests.support.paths import STATES

SYNC_DIRS = ("_modules", "_states", "_pillar", "_runners", "_utils")


@pytest.fixture(scope="package")
def fileserver_root(test_root):
    """Only the loader dirs of the repo (not the venv or tests) as a second file_roots entry."""
    root = test_root / "fileserver"
    root.mkdir()
    for name in SYNC_DIRS:
        (root / name).symlink_to(REPO / name)
    return root


@pytest.fixture(scope="package")
def pillar_tree(test_root):
    tree = test_root / "pillar"
    shutil.copytree(PILLAR_EXAMPLE, tree)
    return tree


@pytest.fixture(scope="package")
def salt_master(salt_factories, fileserver_root, pillar_tree):
    config = {
        "file_roots": {"base": [str(STATES), str(fileserver_root)]},
        "pillar_roots": {"base": [str(pillar_tree)]},
        "ext_pillar": [{"rolestack": {"inventory": "inventory.yaml"}}],
        "interface": "127.0.0.1",
    }
    master = salt_factories.salt_master_daemon("salt", overrides=config)
    with master.started():
        # the classic way: the master syncs its own ext_pillar and utils from the file roots
        ret = master.salt_run_cli().run("saltutil.sync_all")
        assert ret.returncode == 0, ret
        yield master


def _minion(salt_master, minion_id):
    minion = salt_master.salt_minion_daemon(minion_id, overrides={"master": "127.0.0.1"})
    return minion


@pytest.fixture(scope="package")
def app1(salt_master):
    minion = _minion(salt_master, "app1")
    with minion.started():
        yield minion


@pytest.fixture(scope="package")
def db2(salt_master):
    minion = _minion(salt_master, "db2")
    with minion.started():
        yield minion


@pytest.fixture(scope="package")
def minions(app1, db2):
    for minion in (app1, db2):
        ret = minion.salt_call_cli().run("saltutil.sync_all")
        assert ret.returncode == 0, ret
    return {"app1": app1, "db2": db2}
