"""
A real master with the peer ACL `rolestack-inventory master-acl` derives: a host without the db role reaches no
minion with serve_backup_stream or sign_remote_certificate; db hosts reach exactly their targets.

Its own master and minions (ids of a small inventory, distinct from the package's master and minions). The minions
have no synced modules: an allowed publish gets "... is not available" (or a missing-argument error) back, so it
proves the master let it through while nothing runs.
"""

import contextlib
import pathlib

import pytest
import rolestack_inventory as inv
import yaml

INVENTORY = {
    "level": "test",
    "domain": "acl",
    "network": "10.20.30.0/24",
    "hosts": {
        "acl-salt": {"roles": ["salt"], "address": "10.20.30.2"},
        "acl-db1": {"roles": ["db", "masterdb"], "address": "10.20.30.11"},
        "acl-db2": {"roles": ["db"], "address": "10.20.30.12"},
        "acl-app1": {"roles": ["app"], "address": "10.20.30.51"},
    },
    "secrets": {"replication_password": "acl-replication-0123456789"},
}
STREAM = "mariadb_replication.serve_backup_stream"
SIGN = "x509.sign_remote_certificate"


@pytest.fixture(scope="module")
def acl_master(salt_factories):
    acl = inv.master_acl(INVENTORY)
    master = salt_factories.salt_master_daemon("acl-master", overrides={"interface": "127.0.0.1", **acl})
    # salt-factories merges overrides into its default peer ('.*': [test.*]): the file gets the derived ACL only
    config = yaml.safe_load(pathlib.Path(master.config_file).read_text())
    config.update(acl)
    pathlib.Path(master.config_file).write_text(yaml.safe_dump(config))
    with master.started():
        yield master


@pytest.fixture(scope="module")
def acl_minions(acl_master):
    with contextlib.ExitStack() as stack:
        started = {}
        for minion_id in INVENTORY["hosts"]:
            minion = acl_master.salt_minion_daemon(minion_id, overrides={"master": "127.0.0.1"})
            stack.enter_context(minion.started())
            started[minion_id] = minion
        yield started


def _publish(minions, caller, target, fun, tgt_type="glob"):
    ret = minions[caller].salt_call_cli(timeout=60).run("publish.publish", target, fun, tgt_type=tgt_type, timeout=15)
    assert ret.returncode == 0, ret
    return ret.data


def test_the_master_runs_the_derived_acl(acl_master):
    config = yaml.safe_load(pathlib.Path(acl_master.config_file).read_text())
    assert {key: config[key] for key in ("peer", "peer_run")} == inv.master_acl(INVENTORY)


@pytest.mark.parametrize(
    ("caller", "target", "fun"),
    [
        ("acl-app1", "acl-db1", STREAM),
        ("acl-app1", "acl-salt", SIGN),
        ("acl-app1", "*", STREAM),
        ("acl-salt", "acl-db1", STREAM),
        ("acl-db2", "acl-app1", STREAM),
        ("acl-db2", "acl-db1", SIGN),
        ("acl-db2", "*", STREAM),
        ("acl-db2", "acl-db1", "test.ping"),
    ],
)
def test_a_publish_outside_the_acl_reaches_nothing(acl_minions, caller, target, fun):
    assert not _publish(acl_minions, caller, target, fun)


@pytest.mark.parametrize(
    ("caller", "target", "fun"),
    [("acl-db2", "acl-db1", STREAM), ("acl-db1", "acl-db2", STREAM), ("acl-db2", "acl-salt", SIGN)],
)
def test_a_db_host_reaches_exactly_its_targets(acl_minions, caller, target, fun):
    # the positive control: the same master, minions and publish path let these through
    answer = _publish(acl_minions, caller, target, fun)
    assert list(answer) == [target], answer


def test_no_minion_runs_a_runner(acl_minions):
    # the CA's policies name exact minion ids (matched on the CA): nobody needs peer_run, not even the salt host
    args = ("publish.runner", "match.compound_matches")
    for minion in ("acl-salt", "acl-app1", "acl-db1"):
        refused = acl_minions[minion].salt_call_cli(timeout=60).run(*args, arg=["L@acl-db1", "acl-db1"])
        assert not refused.data, (minion, refused)
