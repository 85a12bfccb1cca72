"""Functional tier: our modules, ext_pillar and states through salt-factories loaders (masterless)."""

import shutil

import pytest
import salt.utils.event
import yaml
from saltfactories.utils.functional import Loaders

from tests.support.mariadb import Instances
from tests.support.mariadb import make_pki
from tests.support.paths import LOADER_DIRS
from tests.support.paths import PILLAR_EXAMPLE
from tests.support.paths import STATES

# No minion daemon runs here, so nothing listens on the minion's event socket. salt's event.fire would still try to
# reach it for a whole second each time (SaltEvent.connect_pull's default), and saltutil.sync_all fires two such
# events (refresh_modules, refresh_pillar) in every Loaders(): seconds of each test spent waiting for nobody.
EVENT_CONNECT_TIMEOUT_S = 0.05


@pytest.fixture(autouse=True, scope="session")
def _no_wait_for_a_minion_event_bus():
    original = salt.utils.event.SaltEvent.connect_pull

    def connect_pull(self, timeout=1):
        return original(
            self, timeout=EVENT_CONNECT_TIMEOUT_S if timeout is None else min(timeout, EVENT_CONNECT_TIMEOUT_S)
        )

    salt.utils.event.SaltEvent.connect_pull = connect_pull
    yield
    salt.utils.event.SaltEvent.connect_pull = original


@pytest.fixture
def pillar_tree(tmp_path):
    """A writable copy of pillar.example/ for one test."""
    tree = tmp_path / "pillar"
    shutil.copytree(PILLAR_EXAMPLE, tree)
    return tree


@pytest.fixture
def make_loaders(salt_factories, pillar_tree):
    """make_loaders(minion_id, **overrides) -> Loaders of a masterless minion using our pillar tree."""
    made = []

    def make(minion_id="app1", ext_pillar=None, **overrides):
        config = {
            "file_client": "local",
            "file_roots": {"base": [str(STATES)]},
            "pillar_roots": {"base": [str(pillar_tree)]},
            "ext_pillar": ext_pillar if ext_pillar is not None else [{"rolestack": {"inventory": "inventory.yaml"}}],
            **LOADER_DIRS,
            **overrides,
        }
        factory = salt_factories.salt_minion_daemon(minion_id, overrides=config)
        loaders = Loaders(factory.config.copy())
        made.append(loaders)
        return loaders

    yield make
    for loaders in made:
        loaders.reset_state()


@pytest.fixture
def pillar_loaders(make_loaders, tmp_path):
    """pillar_loaders(minion_id, pillar) -> Loaders of a masterless minion whose whole pillar is ``pillar``."""

    def make(minion_id, pillar):
        tree = tmp_path / f"pillar-{len(list(tmp_path.glob('pillar-*')))}"
        tree.mkdir()
        (tree / "top.sls").write_text("base:\n  '*':\n    - rolestack\n")
        (tree / "rolestack.sls").write_text(yaml.safe_dump(pillar))
        return make_loaders(minion_id, ext_pillar=[], pillar_roots={"base": [str(tree)]})

    return make


@pytest.fixture
def ext_pillar(make_loaders):
    """ext_pillar(minion_id, **config) -> the rolestack ext_pillar result for that minion."""

    import salt.loader

    # one set of loaders (one cachedir) serves every minion id, as on a master
    loaders = make_loaders("pillar-master")
    pillars = salt.loader.pillars(loaders.opts, loaders.modules)

    def call(minion_id, pillar=None, **config):
        return pillars["rolestack"](minion_id, pillar or {}, **(config or {"inventory": "inventory.yaml"}))

    call.opts = loaders.opts
    call.read_entry = pillars["rolestack"].__globals__["_read_entry"]
    return call


# private MariaDB servers for the replication modules: a PKI and servers per test module, stopped by PID after it


@pytest.fixture(scope="module")
def pki(test_root, request):
    return make_pki(test_root / f"pki-{request.module.__name__.rpartition('.')[2]}")


@pytest.fixture(scope="module")
def instances(test_root, pki):
    started = Instances(test_root, pki)
    yield started
    started.stop_all()


@pytest.fixture(scope="module")
def module_loaders(salt_factories, request):
    """
    A masterless minion's loaders for the module (id: the module's MINION, else mariadb-replication), with salt's
    own mysql module loaded, as on a minion after any state run with onlyif/unless (salt loads every execution
    module then). Loading it calls pymysql.install_as_MySQLdb() and imports MySQLdb.err, .converters, .cursors:
    second copies of pymysql's submodules that replace the attributes pymysql.err & co. The db tests run in that
    state whatever ran before them in the session (they name pymysql.OperationalError, never pymysql.err.*).
    """
    config = {"file_client": "local", "ext_pillar": [], **LOADER_DIRS}
    factory = salt_factories.salt_minion_daemon(
        getattr(request.module, "MINION", "mariadb-replication"), overrides=config
    )
    loaders = Loaders(factory.config.copy())
    assert "mysql.query" in loaders.modules, "salt's mysql module did not load"
    yield loaders
    loaders.reset_state()
