"""
The ext_pillar's cache format (_pillar/rolestack.py CACHE_FORMAT) names the code that derives the pillars, as it
runs in the master: every util the derivation imports, each as it was imported. The master keeps a util it
imported while it loads the ext_pillar module again from disk; a push of new utils followed by one pillar compile
must not file the old code's derivation under the new code's name (it would look current after a restart).
"""

import importlib.util
import shutil
import sys

import pytest

from tests.support.paths import REPO


@pytest.fixture
def utils(tmp_path, monkeypatch):
    """A copy of _utils first on sys.path, no rolestack util imported yet (sys.modules restored afterwards)."""
    copy = tmp_path / "utils"
    shutil.copytree(REPO / "_utils", copy)
    monkeypatch.syspath_prepend(str(copy))
    for name in [name for name in sys.modules if name.startswith("rolestack_")]:
        monkeypatch.delitem(sys.modules, name)
    yield copy
    for name in [name for name in sys.modules if name.startswith("rolestack_")]:
        del sys.modules[name]


def load_ext_pillar():
    """The ext_pillar module executed from disk, as the master's loader does at each load."""
    spec = importlib.util.spec_from_file_location("rolestack_ext_pillar_under_test", REPO / "_pillar" / "rolestack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not module.MISSING_UTIL, module.MISSING_UTIL
    return module.CACHE_FORMAT


def forget_utils():
    """A master restart: the utils are imported again."""
    for name in [name for name in sys.modules if name.startswith("rolestack_")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    "changed", ["rolestack_inventory.py", "rolestack_dns.py", "rolestack_base.py", "rolestack_kv.py"]
)
def test_new_util_code_is_a_new_format_only_once_it_runs(utils, changed):
    first = load_ext_pillar()
    assert load_ext_pillar() == first
    with open(utils / changed, "a", encoding="utf-8") as handle:
        handle.write("\n# a pushed change\n")
    # the old code still runs in this process: the same format, so nothing is filed under the new code's name
    assert load_ext_pillar() == first
    forget_utils()
    second = load_ext_pillar()
    assert second != first
    assert load_ext_pillar() == second
