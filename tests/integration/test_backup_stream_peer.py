"""
serve_backup_stream through a real salt master's peer publish: salt hands the target the caller's authenticated
minion id as ``__pub_id`` (a caller cannot forge it), and a master CLI job carries none. A master of its own (its
``peer`` lets app2 publish the function) with minions db1-masterdb (the source, a db host of pillar.example) and
app2 (not a db host); ids the package's other minions (app1, db2) do not use.
"""

import pytest

from tests.integration.conftest import _minion
from tests.support.paths import STATES

FUNCTION = "mariadb_replication.serve_backup_stream"


@pytest.fixture(scope="module")
def peer_master(salt_factories, fileserver_root, pillar_tree):
    config = {
        "file_roots": {"base": [str(STATES), str(fileserver_root)]},
        "pillar_roots": {"base": [str(pillar_tree)]},
        "ext_pillar": [{"rolestack": {"inventory": "inventory.yaml"}}],
        "interface": "127.0.0.1",
        "peer": {"^app2$": [FUNCTION]},
    }
    master = salt_factories.salt_master_daemon("salt-peer", overrides=config)
    with master.started():
        assert master.salt_run_cli().run("saltutil.sync_all").returncode == 0
        yield master


@pytest.fixture(scope="module")
def peer_minions(peer_master):
    started = {}
    with _minion(peer_master, "db1-masterdb").started() as source, _minion(peer_master, "app2").started() as caller:
        for minion in (source, caller):
            ret = minion.salt_call_cli().run("saltutil.sync_all")
            assert ret.returncode == 0, ret
        started.update(source=source, caller=caller)
        yield started


def _publish(caller, *args):
    ret = caller.salt_call_cli(timeout=60).run("publish.publish", "db1-masterdb", FUNCTION, list(args), timeout=20)
    assert ret.returncode == 0, ret
    return ret.data


def test_a_peer_call_carries_the_callers_id_and_is_refused(peer_minions):
    # as in the issue: a listener for an address and a CA of the caller's choice
    answer = _publish(peer_minions["caller"], 4444, "10.10.10.99", "/tmp/x.pem", "/tmp/x.key", "/etc/ssl/certs/ca.pem")
    assert "serve_backup_stream through peer publish (caller app2)" in answer["db1-masterdb"], answer
    assert "port, ssl_ca, ssl_cert, ssl_key refused" in answer["db1-masterdb"], answer


def test_a_forged_pub_id_is_overwritten_by_the_callers_own(peer_minions):
    answer = _publish(peer_minions["caller"], "__pub_id=db2", "timeout=5")
    assert "the caller 'app2' is not a db peer of this host" in answer["db1-masterdb"], answer


def test_a_master_cli_job_carries_no_pub_id(peer_master, peer_minions):
    # no peer refusal: the local rules apply (the timeout cap is checked before anything listens)
    ret = peer_master.salt_cli(timeout=60).run(FUNCTION, allow="10.10.10.12", timeout=901, minion_tgt="db1-masterdb")
    assert "timeout must be more than 0 and at most 900 seconds" in str(ret.data), ret
    assert "peer publish" not in str(ret.data), ret
