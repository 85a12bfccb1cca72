"""
The lab's wait for a container's boot (lab/rolestack_lab.py wait_booted): a unit that failed at boot (a CI run met
systemd-user-sessions.service failed with 219/CGROUP, which left /run/nologin and refused the operators' logins) is
started once more; units failing again stop the lab with their names. systemctl is a stand-in here.
"""

import sys

import pytest

from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "lab"))
import rolestack_lab


class FakeHost:
    def __init__(self, state, failed, heals=True):
        self.state, self.failed, self.heals = state, list(failed), heals
        self.commands = []

    def in_host(self, lab, host, *cmd, check=True, timeout=None):
        self.commands.append(cmd)
        if cmd[:2] == ("systemctl", "is-system-running"):
            out = self.state
        elif cmd[:3] == ("systemctl", "list-units", "--failed"):
            out = "".join(f"{unit} loaded failed failed Some unit\n" for unit in self.failed)
        elif cmd[:2] == ("systemctl", "start") and self.heals:
            self.failed, self.state, out = [], "running", ""
        else:
            out = ""
        return type("Proc", (), {"stdout": out, "returncode": 0})()


@pytest.fixture
def host(monkeypatch):
    def make(state, failed=(), heals=True):
        fake = FakeHost(state, failed, heals)
        monkeypatch.setattr(rolestack_lab, "in_host", fake.in_host)
        monkeypatch.setattr(rolestack_lab, "container_pid1", lambda lab, name: 4242)
        monkeypatch.setattr(rolestack_lab, "say", lambda message: None)
        return fake

    return make


def test_a_clean_boot_is_left_alone(host):
    fake = host("running")
    assert rolestack_lab.wait_booted(None, "app1") == "running"
    assert not any(cmd[:2] == ("systemctl", "start") for cmd in fake.commands)


def test_a_unit_failed_at_boot_is_started_again(host):
    fake = host("degraded", ["systemd-user-sessions.service"])
    assert rolestack_lab.wait_booted(None, "memcache-alpha1") == "running"
    assert ("systemctl", "start", "--", "systemd-user-sessions.service") in fake.commands


def test_units_failing_again_stop_the_lab_with_their_names(host):
    host("degraded", ["systemd-user-sessions.service", "ssh.service"], heals=False)
    with pytest.raises(rolestack_lab.LabError, match=r"systemd-user-sessions\.service, ssh\.service"):
        rolestack_lab.wait_booted(None, "salt")
