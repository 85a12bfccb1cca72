"""
Enrollment in the lab: each host has its own random token (a file of its container readable by root only), the
master's autosign_grains file holds only tokens not used yet, and a used token enrols nothing: a new key under
another id presenting it stays pending. (Runs before test_4_replace, which issues a fresh token.)
"""

import json

import pytest

from tests.e2e.conftest import rolestack_lab

ENROLL = "/" + rolestack_lab.ENROLL_CONF
PROBE_DIR = "/root/rolestack-enroll-probe"


def token_of(lab, host):
    return json.loads(lab.read(host, ENROLL))["grains"][rolestack_lab.ENROLL_GRAIN]


@pytest.fixture(scope="module")
def tokens(lab):
    return {host: token_of(lab, host) for host in lab.hosts}


def test_each_host_has_its_own_token_readable_by_root_only(lab, tokens):
    assert len(set(tokens.values())) == len(tokens), tokens
    for host in lab.hosts:
        assert lab.sh(host, "stat", "-c", "%U:%G %a", ENROLL).stdout.split() == ["root:root", "600"], host
        # no other host's token anywhere in the host's salt configuration or root's home
        others = [arg for other, token in tokens.items() if other != host for arg in ("-e", token)]
        found = lab.sh(host, "grep", "-rlF", *others, "/etc/salt", "/root", check=False)
        assert found.returncode == 1, (host, found.stdout)
    # and no host's minion configuration carries the token outside that file
    assert tokens["db2"] not in lab.read("db2", "/etc/salt/minion.d/lab.conf")


def test_the_master_holds_only_tokens_not_used_yet(lab, tokens):
    autosign = lab.lab.autosign_dir / rolestack_lab.ENROLL_GRAIN
    assert oct(autosign.stat().st_mode & 0o777) == "0o600"
    assert oct(lab.lab.enroll_tokens_file.stat().st_mode & 0o777) == "0o600"
    held = autosign.read_text()
    # every host's key was accepted: its token was retired
    assert not [host for host, token in tokens.items() if token in held], held
    assert rolestack_lab.read_enroll_tokens(lab.lab) == {}


def enrol(lab, minion_id, token):
    """A new minion (its own key) on app1 presenting `token` under `minion_id`; returns the master's view of it."""
    config = {
        "id": minion_id,
        "master": lab.address("salt"),
        "grains": {rolestack_lab.ENROLL_GRAIN: token},
        "autosign_grains": [rolestack_lab.ENROLL_GRAIN],
        "root_dir": f"{PROBE_DIR}/{minion_id}",
        "pki_dir": f"{PROBE_DIR}/{minion_id}/pki",
        "acceptance_wait_time": 1,
        "acceptance_wait_time_max": 1,
    }
    lab.sh("app1", "mkdir", "-p", f"{PROBE_DIR}/{minion_id}")
    rolestack_lab.in_host(lab.lab, "app1", "sh", "-c", f"cat > {PROBE_DIR}/{minion_id}/minion",
                          input=json.dumps(config))  # fmt: skip
    call = lab.sh("app1", "timeout", "25", str(rolestack_lab.VENV / "bin/salt-call"), "-c",
                  f"{PROBE_DIR}/{minion_id}", "--out=json", "test.ping", check=False)  # fmt: skip
    status = rolestack_lab.salt_run(lab.lab, "--out=json", "minion_key.status", minion_id)
    return call, json.loads(status.stdout)


def forget(lab, minion_id):
    rolestack_lab.salt_run(lab.lab, "minion_key.retire", minion_id, check=False)
    lab.sh("app1", "rm", "-rf", f"{PROBE_DIR}/{minion_id}")


def test_an_unused_token_enrols_and_is_then_used_up(lab):
    """The check below can fail: a token on the master's list does enrol a new id."""
    rolestack_lab.write_enroll_tokens(lab.lab, {"probe": "probe-token-0123456789abcdef"})
    try:
        call, status = enrol(lab, "probe1", "probe-token-0123456789abcdef")
        assert status["accepted"] and '"local": true' in call.stdout, (status, call.stdout, call.stderr)
    finally:
        rolestack_lab.retire_enroll_tokens(lab.lab, ["probe"])
        forget(lab, "probe1")


def test_a_used_token_enrols_nothing(lab, tokens):
    """db2's token, read by someone who got into db2, presented under another id: the key stays pending."""
    try:
        call, status = enrol(lab, "intruder1", tokens["db2"])
        assert status["accepted"] == [] and status["pending"], status
        assert call.returncode != 0
    finally:
        forget(lab, "intruder1")
