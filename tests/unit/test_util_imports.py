"""
The one way our modules import a util (docs/development.md, "Importing utils"): a plain import of the top-level
module; when a util is missing, ``__virtual__`` refuses to load and names it.
"""

import importlib.util
import sys

import pytest

from tests.support.paths import REPO

# each loader module, a util it imports, and the dunders its __virtual__ looks at first
LOADED = [
    ("_modules/inventory.py", "rolestack_inventory", {}),
    ("_modules/mariadb_replication.py", "rolestack_mariadb_server", {}),
    ("_states/mariadb_replication.py", "rolestack_mariadb_sql", {"__salt__": {"mariadb_replication.status": None}}),
    ("_runners/db.py", "rolestack_gtid", {"__opts__": {"__role": "master"}}),
    ("_pillar/rolestack.py", "rolestack_inventory", {}),
    ("_modules/twemproxy.py", "rolestack_twemproxy", {}),
    ("_states/twemproxy.py", "rolestack_twemproxy", {"__salt__": {"twemproxy.render": None}}),
    ("_modules/rolestack_kv.py", "rolestack_kv", {}),
    ("_modules/rolestack_rsync.py", "rolestack_rsync", {}),
    ("_modules/rolestack_backup.py", "rolestack_backup", {}),
    ("_modules/rolestack_db_backup.py", "rolestack_mariadb_backup", {}),
    ("_modules/rolestack_jumpbox.py", "rolestack_jumpbox", {}),
    ("_modules/rolestack_elastic.py", "rolestack_elastic", {}),
    ("_runners/cache.py", "rolestack_kv", {"__opts__": {"__role": "master"}}),
]


def _load(path, dunders):
    spec = importlib.util.spec_from_file_location("loaded_" + path.replace("/", "_")[:-3], REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, value in dunders.items():
        setattr(module, name, value)
    return module


@pytest.mark.parametrize(("path", "util", "dunders"), LOADED)
def test_a_missing_util_is_named_by_virtual(monkeypatch, path, util, dunders):
    assert _load(path, dunders).__virtual__() is not False
    monkeypatch.setitem(sys.modules, util, None)  # import now raises ImportError for that name
    refused = _load(path, dunders).__virtual__()
    assert refused[0] is False and f"the util {util} is missing" in refused[1], refused
