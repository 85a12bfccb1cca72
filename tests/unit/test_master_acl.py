"""The master's peer/peer_run settings derived from the inventory: exact, anchored, least privilege."""

import copy
import fnmatch
import io
import re

import pytest
import rolestack_inventory as inv
import salt.utils.minions
import yaml

from rolestack import cli
from tests.support.paths import EXAMPLE_INVENTORY

SIGN = r"^x509\.sign_remote_certificate\Z"
STREAM = r"^mariadb_replication\.serve_backup_stream\Z"


@pytest.fixture
def example():
    return inv.load_yaml(EXAMPLE_INVENTORY.read_text(), str(EXAMPLE_INVENTORY))


def test_the_acl_lists_exact_targets(example):
    assert inv.master_acl(example) == {
        "peer": {
            r"^db1-masterdb\Z": [{"L@salt": [SIGN]}, {"L@db2": [STREAM]}],
            r"^db2\Z": [{"L@salt": [SIGN]}, {"L@db1-masterdb": [STREAM]}],
        },
        "peer_run": {},
    }


def test_every_pattern_is_anchored_and_escaped(example):
    acl = inv.master_acl(example)
    patterns = list(acl["peer"])
    patterns += [f for rights in acl["peer"].values() for right in rights for fs in right.values() for f in fs]
    for pattern in patterns:
        assert pattern.startswith("^") and pattern.endswith(r"\Z"), pattern
    # salt matches with re.match: a prefix, a dot or a trailing newline must not widen a pattern
    assert re.match(inv.exact_pattern("db2"), "db2") and not re.match(inv.exact_pattern("db2"), "db22")
    assert not re.match(inv.exact_pattern("db2"), "db2\n")
    assert not re.match(SIGN, "x509Xsign_remote_certificate")
    assert not re.match(SIGN, "x509.sign_remote_certificate_and_more")


def test_salt_does_not_match_salt2(example):
    data = copy.deepcopy(example)
    data["hosts"]["salt2"] = {"roles": ["app"], "address": "10.10.10.99"}
    acl = inv.master_acl(data)
    assert acl["peer_run"] == {}
    assert not any(re.match(host_key, "salt2") for host_key in acl["peer"])


def test_a_db_host_added_is_in_the_acl_and_others_are_not(example):
    data = copy.deepcopy(example)
    data["hosts"]["db3"] = {"address": "10.10.10.13"}
    acl = inv.master_acl(data)
    assert acl["peer"][r"^db3\Z"] == [{"L@salt": [SIGN]}, {"L@db1-masterdb,db2": [STREAM]}]
    assert acl["peer"][r"^db2\Z"][1] == {"L@db1-masterdb,db3": [STREAM]}
    assert set(acl["peer"]) == {r"^db1-masterdb\Z", r"^db2\Z", r"^db3\Z"}


def test_a_single_db_host_may_only_ask_for_signing(example):
    data = copy.deepcopy(example)
    del data["hosts"]["db2"]
    assert inv.master_acl(data)["peer"] == {r"^db1-masterdb\Z": [{"L@salt": [SIGN]}]}


def test_an_invalid_inventory_gives_no_acl(example):
    data = copy.deepcopy(example)
    data["hosts"]["db2"]["roles"] = ["db", "masterdb"]
    with pytest.raises(inv.InventoryError, match="masterdb"):
        inv.master_acl(data)


# ---- what Salt's master does with the ACL: salt/master.py __verify_minion_publish and
# salt/utils/minions.py CkMinions.auth_check (publish_validate), with the accepted keys given here


def _peer_allowed(acl, accepted, minion_id, fun, tgt, tgt_type="glob"):
    perms = []
    for match, rights in acl["peer"].items():
        if re.match(match, minion_id):
            perms.extend(rights)
    # CkMinions without its key cache: only the target expansion is replaced (accepted keys given here)
    ckminions = salt.utils.minions.CkMinions.__new__(salt.utils.minions.CkMinions)
    ckminions.opts = {}

    def check_minions(expr, tgt_type="glob", **_kwargs):
        if tgt_type in ("compound", "compound_pillar_exact") and expr.startswith("L@"):
            found = set(expr[2:].split(",")) & accepted
        elif tgt_type in ("list",):
            found = set(expr if isinstance(expr, list) else expr.split(",")) & accepted
        else:
            found = {minion for minion in accepted if fnmatch.fnmatch(minion, expr)}
        return {"minions": sorted(found), "missing": []}

    ckminions.check_minions = check_minions
    return ckminions.auth_check(perms, fun, [], tgt, tgt_type, publish_validate=True)


ACCEPTED = {"salt", "salt2", "db1-masterdb", "db2", "app1", "db2.production.wpdn"}


@pytest.mark.parametrize(
    ("caller", "fun", "tgt", "allowed"),
    [
        ("db2", "x509.sign_remote_certificate", "salt", True),
        ("db2", "mariadb_replication.serve_backup_stream", "db1-masterdb", True),
        ("db1-masterdb", "mariadb_replication.serve_backup_stream", "db2", True),
        # a non-db host may ask nobody for anything
        ("app1", "mariadb_replication.serve_backup_stream", "db1-masterdb", False),
        ("app1", "x509.sign_remote_certificate", "salt", False),
        ("salt", "mariadb_replication.serve_backup_stream", "db1-masterdb", False),
        ("salt2", "x509.sign_remote_certificate", "salt", False),
        ("db2.production.wpdn", "mariadb_replication.serve_backup_stream", "db1-masterdb", False),
        # a db host asks only the CA to sign and only db hosts for a stream
        ("db2", "x509.sign_remote_certificate", "db1-masterdb", False),
        ("db2", "x509.sign_remote_certificate", "salt*", False),
        ("db2", "mariadb_replication.serve_backup_stream", "app1", False),
        ("db2", "mariadb_replication.serve_backup_stream", "*", False),
        ("db2", "mariadb_replication.serve_backup_stream", "salt", False),
        ("db2", "cmd.run", "db1-masterdb", False),
    ],
)
def test_salt_enforces_the_derived_acl(example, caller, fun, tgt, allowed):
    assert bool(_peer_allowed(inv.master_acl(example), ACCEPTED, caller, fun, tgt)) is allowed


def test_cli_prints_the_master_d_block(example, capsys, tmp_path):
    assert cli.main(["master-acl", str(EXAMPLE_INVENTORY)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# derived from")
    assert yaml.safe_load(out) == inv.master_acl(example)
    bad = tmp_path / "inventory.yaml"
    bad.write_text(EXAMPLE_INVENTORY.read_text().replace("level: production", "level: Bad Level"))
    assert cli.main(["master-acl", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "level: got 'Bad Level'" in captured.err


def test_cli_prints_the_salt_host(capsys, tmp_path):
    assert cli.main(["salt-host", str(EXAMPLE_INVENTORY)]) == 0
    assert capsys.readouterr().out == "salt\n"
    assert cli.main(["salt-host", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_cli_names_stdin_as_told_and_never_prints_a_secret(capsys, monkeypatch):
    secret = "leaked-SECRET-value-0123456789"
    text = EXAMPLE_INVENTORY.read_text().replace(
        "replication_password: example-replication-0123456789", f"replication_password: [{secret}]"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert cli.main(["validate", "--stdin-name", "inventory.yaml@abc123", "-"]) == 1
    err = capsys.readouterr().err
    assert "invalid rolestack inventory in inventory.yaml@abc123:" in err
    assert "secrets.replication_password: got a list, expected a string" in err
    assert secret not in err
    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLE_INVENTORY.read_text()))
    assert cli.main(["validate", "--stdin-name", "inventory.yaml@abc123", "-"]) == 0
    assert capsys.readouterr().out == "inventory.yaml@abc123: valid\n"
