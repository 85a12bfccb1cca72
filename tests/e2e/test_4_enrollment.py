"""
Enrollment in the lab is the operator's: the master (bootstrap/master.sh) accepts no key by rule (no auto_accept, no
open_mode, no autosign), every minion was admitted by the fingerprint read on its host (salt-run
minion_key.admit), and a new key stays pending until admitted with its own fingerprint. (Runs before
test_4_replace.)
"""

import json

from tests.e2e.conftest import rolestack_lab

PROBE_DIR = "/root/rolestack-enroll-probe"
WRONG = ":".join(["ab"] * 32)


def status(lab, minion_id):
    return lab.salt_run("minion_key.status", minion_id)


def test_every_minion_was_admitted_with_the_fingerprint_read_on_its_host(lab):
    for host in lab.hosts:
        if host == lab.lab.salt_host:
            continue  # the master's own minion: accepted by the bootstrap with its own key (the same machine)
        finger = lab.lab.hosts[host]["fingerprint"]
        assert finger == rolestack_lab.fingerprint_on_host(lab.lab, host), host
        assert status(lab, host)["accepted"] == [finger], host


def test_the_master_accepts_no_key_by_rule(lab):
    conf = lab.sh(lab.lab.salt_host, "cat", "/etc/salt/master.d/rolestack.conf").stdout
    assert "auto_accept: false" in conf and "open_mode: false" in conf, conf
    found = lab.sh(lab.lab.salt_host, "grep", "-rlE", "autosign|auto_accept: *[Tt]rue|open_mode: *[Tt]rue",
                   "/etc/salt/master", "/etc/salt/master.d", check=False)  # fmt: skip
    assert found.returncode != 0, found.stdout
    assert lab.sh(lab.lab.salt_host, "ls", "/etc/salt/autosign.conf", "/etc/salt/autosign_grains",
                  check=False).returncode != 0  # fmt: skip


def probe(lab, minion_id):
    """A new minion (its own key) on app1 under ``minion_id``: (its salt-call test.ping, its fingerprint)."""
    config = {
        "id": minion_id,
        "master": lab.address(lab.lab.salt_host),
        "root_dir": f"{PROBE_DIR}/{minion_id}",
        "pki_dir": f"{PROBE_DIR}/{minion_id}/pki",
        "acceptance_wait_time": 1,
        "acceptance_wait_time_max": 1,
    }
    salt_call = [str(rolestack_lab.VENV / "bin/salt-call"), "-c", f"{PROBE_DIR}/{minion_id}"]
    lab.sh("app1", "mkdir", "-p", f"{PROBE_DIR}/{minion_id}")
    rolestack_lab.in_host(lab.lab, "app1", "sh", "-c", f"cat > {PROBE_DIR}/{minion_id}/minion",
                          input=json.dumps(config))  # fmt: skip
    call = lab.sh("app1", "timeout", "20", *salt_call, "--out=json", "test.ping", check=False)
    finger = json.loads(lab.sh("app1", *salt_call, "--local", "--out=json", "key.finger").stdout)["local"]
    return call, finger


def test_a_new_key_stays_pending_until_admitted_with_its_fingerprint(lab):
    """The checks below can fail: a master accepting keys by rule accepts the probe at once."""
    try:
        call, finger = probe(lab, "probe1")
        assert call.returncode != 0, call.stdout
        assert status(lab, "probe1")["accepted"] == [] and status(lab, "probe1")["pending"] == [finger]
        wrong = rolestack_lab.salt_run(lab.lab, "--out=json", "minion_key.admit", "probe1", WRONG, "timeout=0",
                                       check=False)  # fmt: skip
        assert wrong.returncode != 0, wrong.stdout
        assert status(lab, "probe1")["accepted"] == []
        assert lab.salt_run("minion_key.admit", "probe1", finger, "timeout=0") == finger
        assert status(lab, "probe1")["accepted"] == [finger]
    finally:
        rolestack_lab.salt_run(lab.lab, "minion_key.retire", "probe1", check=False)
        lab.sh("app1", "rm", "-rf", f"{PROBE_DIR}/probe1")
