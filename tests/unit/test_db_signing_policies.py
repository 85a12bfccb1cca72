"""
The CA signs per host: one x509_v2 signing policy per db host and certificate kind, derived from the inventory
(_utils/rolestack_inventory.py), with the host's fixed CN and subjectAltName and its exact minion id.
"""

import pytest
import rolestack_inventory as inv

from tests.support.paths import EXAMPLE_INVENTORY

ZONE = "production.wpdn"
KINDS = {"server": "serverAuth", "client": "clientAuth"}


@pytest.fixture
def example():
    """pillar.example's inventory with a third db host."""
    inventory = inv.load_yaml(EXAMPLE_INVENTORY.read_text(), str(EXAMPLE_INVENTORY))
    inventory["hosts"]["db3"] = {"address": "10.10.10.13"}
    return inventory


def policies(inventory):
    derived = inv.derive(inventory)
    return {name: _merge(items) for name, items in derived["hosts"]["salt"]["x509_signing_policies"].items()}


def _merge(items):
    merged = {}
    for item in items:
        merged.update(item)
    return merged


def db_hosts(inventory):
    return sorted(name for name, pillar in inv.derive(inventory)["hosts"].items() if "db" in pillar["host"]["roles"])


def test_one_server_and_one_client_policy_per_db_host(example):
    hosts = db_hosts(example)
    assert hosts == ["db1-masterdb", "db2", "db3"]
    assert sorted(policies(example)) == sorted(f"rolestack_db_{kind}_{host}" for host in hosts for kind in KINDS)


@pytest.mark.parametrize("host", ["db1-masterdb", "db2", "db3"])
def test_each_policy_names_its_host_exactly_and_fixes_its_names(example, host):
    derived = inv.derive(example)
    address = derived["hosts"][host]["host"]["address"]
    names = [f"DNS:{host}.{ZONE}", f"DNS:{host}"]
    if host == "db1-masterdb":
        names += [f"DNS:masterdb.{ZONE}", "DNS:masterdb"]
    for kind, usage in KINDS.items():
        policy = policies(example)[f"rolestack_db_{kind}_{host}"]
        # a plain id (no glob character, no compound '@'): x509_v2 matches it exactly, the FQDN id does not match
        assert policy["minions"] == host
        assert not set("*?[]@,") & set(policy["minions"])
        assert policy["CN"] == f"{host}.{ZONE}"
        assert policy["subjectAltName"] == [*names, f"IP:{address}"]
        assert policy["extendedKeyUsage"] == usage
        assert policy["signing_private_key"] == "/etc/pki/rolestack/ca.key"
        assert policy["signing_cert"] == "/etc/pki/rolestack/ca.crt"
        assert policy["basicConstraints"] == "critical, CA:false" and policy["days_valid"] == 90


@pytest.mark.parametrize("host", ["db1-masterdb", "db2"])
def test_the_db_host_pillar_names_its_own_policies_and_names(example, host):
    derived = inv.derive(example)
    certs = derived["hosts"][host]["db"]["certs"]
    assert certs["policies"] == {kind: f"rolestack_db_{kind}_{host}" for kind in KINDS}
    server = policies(example)[certs["policies"]["server"]]
    assert (certs["cn"], certs["subject_alt_names"]) == (server["CN"], server["subjectAltName"])
    # no other host gets policies or certificate names
    for other, pillar in derived["hosts"].items():
        if other != "salt":
            assert "x509_signing_policies" not in pillar, other
        if "db" not in pillar:
            continue
        assert pillar["db"]["certs"]["policies"]["server"] == f"rolestack_db_server_{other}"
    assert "x509_signing_policies" not in derived["common"]


def test_a_host_removed_from_the_db_role_has_no_policy(example):
    example["hosts"]["db3"]["roles"] = ["app"]
    remaining = policies(example)
    assert sorted(remaining) == sorted(
        f"rolestack_db_{kind}_{host}" for host in ("db1-masterdb", "db2") for kind in KINDS
    )
    assert all(policy["minions"] != "db3" for policy in remaining.values())
    assert "db" not in inv.derive(example)["hosts"]["db3"]


def test_the_masterdb_alias_follows_the_masterdb_role(example):
    example["hosts"]["db1-masterdb"] = dict(example["hosts"]["db1-masterdb"] or {}, roles=["db"])
    example["hosts"]["db2"] = dict(example["hosts"]["db2"] or {}, roles=["db", "masterdb"])
    moved = policies(example)
    for kind in KINDS:
        assert "DNS:masterdb" in moved[f"rolestack_db_{kind}_db2"]["subjectAltName"]
        assert f"DNS:masterdb.{ZONE}" in moved[f"rolestack_db_{kind}_db2"]["subjectAltName"]
        assert moved[f"rolestack_db_{kind}_db1-masterdb"]["subjectAltName"] == [
            f"DNS:db1-masterdb.{ZONE}",
            "DNS:db1-masterdb",
            "IP:10.10.10.11",
        ]


def test_a_db_host_without_an_address_yet_has_no_policy(example):
    example["hosts"]["db3"] = {}
    derived = inv.derive(example)
    assert derived["hosts"]["db3"]["db"]["certs"] is None
    assert not [name for name in derived["hosts"]["salt"]["x509_signing_policies"] if name.endswith("_db3")]
    # once the mine reports it, the policies follow
    derived = inv.derive(example, mine_addresses={"db3": ["10.10.10.99"]})
    assert derived["hosts"]["db3"]["db"]["certs"]["subject_alt_names"][-1] == "IP:10.10.10.99"


@pytest.mark.parametrize("host", ["db1-masterdb", "db2", "db3"])
def test_the_db_host_knows_its_policies_as_the_ca_sends_them(example, host):
    # a db host's run compares its certificates with policy_contents instead of asking the CA for its policy:
    # the CA's policy, without what the CA removes or keeps to itself, its certificate the db host's copy
    certs = inv.derive(example)["hosts"][host]["db"]["certs"]
    for kind, spec in certs["kinds"].items():
        sent = policies(example)[spec["policy"]]
        for ca_only in ("minions", "signing_private_key", "copypath"):
            sent.pop(ca_only)
        assert sent.pop("signing_cert") == inv.CA_CERT
        assert spec["policy_contents"] == {**sent, "signing_cert": certs["ca"]["file"]}
        assert (spec["key"], spec["cert"]) == (f"/etc/mysql/ssl/{kind}.key", f"/etc/mysql/ssl/{kind}.pem")
    assert certs["ca"] == {"minion": "salt", "mine_path": inv.CA_CERT, "file": "/etc/mysql/ssl/ca.pem"}
