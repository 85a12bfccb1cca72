"""The jump box's logic (_utils/rolestack_jumpbox.py): operators' validation, the derived ssh pillar, ssh_config, known_hosts."""

import copy
from pathlib import Path

import pytest
import rolestack_inventory as inv
import rolestack_jumpbox as jumpbox

EXAMPLE_INVENTORY = Path(__file__).resolve().parents[2] / "pillar.example" / "inventory.yaml"
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICEpgLJbI0FNRcrtODcQl9AWi4DkWMmgp7Fra84k+1ZF alice@example.invalid"
ECDSA = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBLP98tO/cCxOtut6NkQcmMgkjwx3u5tGKC/aBgEi5O0"
    "i89A6a62Bl1Nf0EvysO72mq6voV9JcKDO8aOntYRgl/E= x"
)


@pytest.fixture
def example():
    data = inv.load_yaml(EXAMPLE_INVENTORY.read_text(), str(EXAMPLE_INVENTORY))
    data["operators"] = {"alice": {"ssh_keys": [ED25519], "sudo": True}, "bob": {"ssh_keys": [ECDSA], "sudo": False}}
    return data


def errors_of(operators):
    errors = []
    jumpbox.validate_operators(operators, errors.append)
    return errors


def test_valid_operators_and_the_example_inventory(example):
    assert errors_of(example["operators"]) == []
    assert errors_of(None) == []
    assert inv.validate(example) == []
    assert inv.validate(inv.load_yaml(EXAMPLE_INVENTORY.read_text())) == []


@pytest.mark.parametrize(
    ("operators", "words"),
    [
        (["alice"], ["operators:", "a list", "expected a mapping"]),
        ({"Alice": {"ssh_keys": [ED25519], "sudo": True}}, ["operators.Alice:", "'Alice'", "login name"]),
        ({"root": {"ssh_keys": [ED25519], "sudo": True}}, ["operators.root:", "system account"]),
        ({"alice": "ssh-ed25519"}, ["operators.alice:", "a str", "expected a mapping"]),
        ({"alice": {"ssh_keys": [ED25519]}}, ["operators.alice.sudo: missing", "declared choice"]),
        ({"alice": {"ssh_keys": [ED25519], "sudo": "yes"}}, ["operators.alice.sudo:", "'yes'", "a str", "true or false"]),
        ({"alice": {"ssh_keys": [ED25519], "sudo": True, "shell": "/bin/sh"}}, ["operators.alice.shell: unknown key"]),
        ({"alice": {"ssh_keys": [], "sudo": True}}, ["operators.alice.ssh_keys:", "a list", "non-empty list"]),
        ({"alice": {"ssh_keys": ED25519, "sudo": True}}, ["operators.alice.ssh_keys:", "a str", "non-empty list"]),
        ({"alice": {"ssh_keys": [42], "sudo": True}}, ["operators.alice.ssh_keys[0]:", "an int", "ssh public key"]),
        ({"alice": {"ssh_keys": ["ssh-ed25519"], "sudo": True}}, ["ssh_keys[0]:", "no base64 part"]),
        ({"alice": {"ssh_keys": ["ssh-dss AAAAB3NzaC1kc3M= x"], "sudo": True}}, ["ssh_keys[0]:", "'ssh-dss'"]),
        ({"alice": {"ssh_keys": ['from="10.0.0.1" ' + ED25519], "sudo": True}}, ["ssh_keys[0]:", "options"]),
        ({"alice": {"ssh_keys": ["ssh-ed25519 not*base64 x"], "sudo": True}}, ["ssh_keys[0]:", "not base64"]),
        ({"alice": {"ssh_keys": [ECDSA.replace("ecdsa-sha2-nistp256", "ssh-ed25519", 1)], "sudo": True}}, ["not a ssh-ed25519 key"]),
        ({"alice": {"ssh_keys": [ED25519 + "\nssh-rsa AAAA"], "sudo": True}}, ["ssh_keys[0]:", "several lines"]),
        ({"alice": {"ssh_keys": [ED25519, ED25519.replace("alice", "again")], "sudo": True}}, ["ssh_keys[1]:", "ssh_keys[0]"]),
    ],
)  # fmt: skip
def test_each_refusal_names_the_key_path_the_value_and_what_is_expected(example, operators, words):
    errors = errors_of(operators)
    assert len(errors) == 1, errors
    assert all(word in errors[0] for word in words), errors
    # and the inventory's validator reports it
    data = copy.deepcopy(example)
    data["operators"] = operators
    assert errors[0] in inv.validate(data)


def test_parse_public_key_normalises_and_keeps_the_comment():
    assert jumpbox.parse_public_key("  " + ED25519 + "\n") == tuple(ED25519.split(" ", 2))
    assert jumpbox.parse_public_key(ED25519.rsplit(" ", 1)[0])[2] == ""


def test_every_host_gets_ssh_and_the_salt_host_the_jumpbox(example):
    hosts = inv.derive(example)["hosts"]
    salt = {"name": "salt", "fqdn": "salt.production.wpdn", "address": "10.10.10.2"}
    for name, pillar in hosts.items():
        assert pillar["ssh"]["jump_host"] == salt
        assert sorted(pillar["ssh"]["operators"]) == ["alice", "bob"]
        if name == "salt":
            assert pillar["ssh"]["allow_from"] == [] and pillar["ssh"]["allow_users"] == []
        else:
            assert pillar["ssh"]["allow_from"] == ["10.10.10.2"], name
            assert pillar["ssh"]["allow_users"] == ["*@10.10.10.2", "*@127.0.0.1", "*@::1"]
            assert {"name": "ssh", "port": 22, "allow": ["10.10.10.2/32"]} in pillar["firewall"]["services"]
            assert "jumpbox" not in pillar
        assert pillar["mine_functions"]["ssh.host_keys"] == [{"private": False}, {"certs": False}]
    box = hosts["salt"]["jumpbox"]
    assert box["level"] == "production" and box["operators"]["alice"] == {"ssh_keys": [ED25519], "sudo": True}
    assert box["operators"]["bob"]["sudo"] is False
    assert {h["name"] for h in box["hosts"]} == set(hosts) - {"frontend1"}  # frontend1: address pending


def test_no_operators_means_no_accounts_and_a_pending_salt_address_restricts_nothing(example):
    del example["operators"]
    del example["hosts"]["salt"]["address"]
    hosts = inv.derive(example)["hosts"]
    unrestricted = jumpbox.sshd_config_text([], None)
    assert hosts["db2"]["ssh"] == {
        "jump_host": None,
        "allow_from": [],
        "allow_users": [],
        "operators": {},
        "sshd_config": unrestricted,
    }
    assert "firewall" not in hosts["db2"]
    assert all(s["name"] != "ssh" for s in hosts["sessions1"]["firewall"]["services"])


def test_ssh_config_jumps_through_the_salt_host_by_name(example):
    text = inv.derive(example)["hosts"]["salt"]["jumpbox"]["ssh_config"]
    blocks = text.split("\n\n")
    assert "production (production.wpdn)" in blocks[0]
    assert blocks[1].splitlines()[:2] == ["Host salt salt.production.wpdn", "    HostName 10.10.10.2"]
    assert "ProxyJump" not in blocks[1]
    db2 = next(block for block in blocks if block.startswith("Host db2 "))
    assert db2.splitlines() == [
        "Host db2 db2.production.wpdn",
        "    HostName 10.10.10.12",
        "    ProxyJump salt",
        "    UserKnownHostsFile ~/.ssh/known_hosts ~/.ssh/known_hosts.production.wpdn",
        "    StrictHostKeyChecking yes",
    ]
    assert "frontend1" not in text  # no address yet
    assert text.count("ProxyJump salt") == len(blocks) - 2


def test_known_hosts_lists_every_published_public_key_sorted_and_skips_junk():
    hosts = [
        {"name": "db2", "fqdn": "db2.z", "address": "10.0.0.12"},
        {"name": "app1", "fqdn": "app1.z", "address": "10.0.0.51"},
        {"name": "mail", "fqdn": "mail.z", "address": "10.0.0.3"},
    ]
    mine = {
        "db2": {"ed25519.pub": ED25519, "ecdsa.pub": ECDSA, "rsa": "-----BEGIN OPENSSH PRIVATE KEY-----"},
        "app1": {"ed25519.pub": "garbage", "ed25519-cert.pub": ED25519},
        "stranger": {"ed25519.pub": ED25519},
    }
    text = jumpbox.known_hosts(hosts, mine)
    lines = text.splitlines()
    assert lines[1] == "# app1: no host key in the mine yet (its next highstate sends them)"
    assert lines[2].startswith("db2,db2.z,10.0.0.12 ecdsa-sha2-nistp256 AAAAE2")
    assert lines[3] == "db2,db2.z,10.0.0.12 " + " ".join(ED25519.split()[:2])
    assert lines[4].startswith("# mail:") and len(lines) == 5
    assert "PRIVATE" not in text and "stranger" not in text
    assert jumpbox.known_hosts(list(reversed(hosts)), dict(reversed(list(mine.items())))) == text


def test_sshd_config_text_restricts_to_the_jump_box_where_asked():
    salt = {"name": "salt", "fqdn": "salt.production.wpdn", "address": "10.10.10.2"}
    ssh = jumpbox.ssh_pillar(salt, False, {})
    assert jumpbox.sshd_config_text(ssh["allow_users"], ssh["jump_host"]) == (
        "# managed by salt (rolestack, states/ssh): keys only, no root login, connections from the jump box only\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin no\n"
        "PubkeyAuthentication yes\n"
        "PermitEmptyPasswords no\n"
        "# only the salt host (salt) and loopback may connect: operators come through the jump box (ssh -J)\n"
        "AllowUsers *@10.10.10.2 *@127.0.0.1 *@::1\n"
    )
    # the salt host itself, and every host while the salt host's address is unknown: keys only, from anywhere
    for ssh in (jumpbox.ssh_pillar(salt, True, {}), jumpbox.ssh_pillar(None, False, {})):
        text = jumpbox.sshd_config_text(ssh["allow_users"], ssh["jump_host"])
        assert text.splitlines() == [
            "# managed by salt (rolestack, states/ssh): keys only, no root login",
            *jumpbox.SSHD_SETTINGS,
        ]
        assert text.endswith("PermitEmptyPasswords no\n")


def test_every_host_gets_its_sshd_drop_in_and_an_unknown_minion_an_unrestricted_one(example):
    derived = inv.derive(example)
    for name, pillar in derived["hosts"].items():
        ssh = pillar["ssh"]
        assert ssh["sshd_config"] == jumpbox.sshd_config_text(ssh["allow_users"], ssh["jump_host"])
        assert ("AllowUsers *@10.10.10.2 *@127.0.0.1 *@::1\n" in ssh["sshd_config"]) is (name != "salt"), name
    # no accounts for a minion the inventory does not know, the same unrestricted drop-in as the salt host's
    assert derived["common"]["ssh"] == {"sshd_config": derived["hosts"]["salt"]["ssh"]["sshd_config"]}
