"""`make lab-replace HOST=app1`: a new container and a new key under the old id, back in its role by highstate."""

import json
import time

from tests.e2e.conftest import failures
from tests.e2e.conftest import lab_cli
from tests.e2e.conftest import rolestack_lab

HOST = "app1"


def master_fingerprint(lab, host):
    proc = rolestack_lab.salt_run(lab.lab, "--out=json", "minion_key.status", host)
    return json.loads(proc.stdout)


def test_replace_brings_the_host_back(lab):
    before = master_fingerprint(lab, HOST)
    old_pid = rolestack_lab.container_pid1(lab.lab, HOST)
    proc = lab_cli("replace", HOST, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert f"{HOST} back in its role" in proc.stdout
    lab.refresh()
    assert rolestack_lab.container_pid1(lab.lab, HOST) not in (None, old_pid)
    after = master_fingerprint(lab, HOST)
    assert after != before and after["accepted"], (before, after)
    # the replaced host's daemon is admitted too (it retries its authentication every few seconds)
    deadline = time.monotonic() + 60
    while lab.salt("-t", "5", HOST, "test.ping").get(HOST) is not True:
        assert time.monotonic() < deadline, "the replaced minion never answered test.ping"
        time.sleep(2)
    # its role is there (the base role's files) and a second highstate changes nothing
    assert f"nameserver {lab.address('salt')}" in lab.read(HOST, "/etc/resolv.conf")
    result = lab.highstate(HOST)
    assert result["clean"], failures(result)
    assert not [sid for sid, state in result["returns"][HOST].items() if state.get("changes")]
