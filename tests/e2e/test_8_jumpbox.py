"""
The salt host as the jump box (issue 12, item 3), in the lab: an operator committed to the inventory reaches every
host with ``ssh`` through the salt host (ProxyJump from the generated ssh_config), host keys checked against the
known_hosts the salt host built from the mine (StrictHostKeyChecking=yes, no user known_hosts: no trust on first
use); from another host (app1) the same key and account are refused (db2's firewall and sshd's AllowUsers); the
jump box's checks of the hostile battery pass, and fail when db2's firewall table and AllowUsers are removed, which
db2's highstate puts back with sshd reloaded, not restarted. Removing the operator from the inventory removes the
account. Every highstate here is followed by one with zero changes on every host.
"""

import contextlib
import subprocess
import sys

import pytest

from tests.e2e.conftest import changed_states
from tests.e2e.conftest import failures
from tests.e2e.conftest import rolestack_lab
from tests.e2e.test_3_git_pillar import commit  # a committed inventory edit
from tests.e2e.test_3_git_pillar import git
from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "bench" / "support"))
import security_checks as checks

OPERATOR = "e2e-operator"
KEY = "/root/e2e-operator-key"
CLIENT_CONFIG = "/root/e2e-ssh-config"
SSH_CONFIG = "/etc/rolestack/ssh_config"
DROP_IN = "/etc/ssh/sshd_config.d/00-rolestack.conf"


def converge(lab, target="*"):
    """A highstate without failure, then one with zero changes (the idempotency gate) on ``target``."""
    first = lab.highstate(target)
    assert first["clean"], failures(first)
    second = lab.highstate(target)
    assert second["clean"], failures(second)
    changed = {host: states for host, states in changed_states(second).items() if states}
    assert not changed, changed
    return first


def ssh(lab, source, *args):
    return lab.sh(source, "timeout", "60", "ssh", *args, check=False)


@pytest.fixture(scope="module")
def operator(lab, tmp_path_factory):
    """An operator key (generated here), its private half on the salt host and app1, the operator committed."""
    keys = tmp_path_factory.mktemp("operator")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", OPERATOR, "-f", str(keys / "key")], check=True)
    private = (keys / "key").read_text()
    public = (keys / "key.pub").read_text().strip()
    for host in (lab.lab.salt_host, "app1"):
        _put(lab, host, private)
    # the client side on the salt host: the generated ssh_config, this key, no user known_hosts (no TOFU)
    client = f"Include {SSH_CONFIG}\nHost *\n    User {OPERATOR}\n    IdentityFile {KEY}\n    BatchMode yes\n"
    _put(lab, lab.lab.salt_host, client, CLIENT_CONFIG)
    lab.sh(lab.lab.salt_host, "rm", "-f", "/root/.ssh/known_hosts", "/root/.ssh/known_hosts.production.wpdn")
    commit(lab, lambda d: d.setdefault("operators", {}).update({OPERATOR: {"ssh_keys": [public], "sudo": False}}),
           f"operator {OPERATOR}")  # fmt: skip
    try:
        converge(lab)
        yield public
    finally:
        git(lab, "revert", "--no-edit", "HEAD")
        # one highstate removes the account (the idempotency of the role was shown by the converge above)
        result = lab.highstate()
        assert result["clean"], failures(result)
        for host in (lab.lab.salt_host, "app1"):
            lab.sh(host, "rm", "-f", KEY, CLIENT_CONFIG, check=False)
    for host in lab.hosts:  # the operator left the inventory: the account is gone everywhere
        assert lab.sh(host, "id", OPERATOR, check=False).returncode != 0, host


def _put(lab, host, text, path=KEY):
    rolestack_lab.in_host(lab.lab, host, "sh", "-c", f"umask 077 && cat > {path}", input=text, timeout=60)


def test_the_salt_host_publishes_the_ssh_config_and_known_hosts(lab, operator):
    salt = lab.lab.salt_host
    config = lab.read(salt, SSH_CONFIG)
    assert config in lab.read(salt, "/etc/motd")  # printed after login, with the level
    assert "production" in lab.read(salt, "/etc/motd")
    known = lab.read(salt, "/etc/ssh/ssh_known_hosts")
    for host in lab.hosts:
        assert f"Host {host} {host}.production.wpdn" in config
        assert f"{host},{host}.production.wpdn,{lab.address(host)} ssh-ed25519 " in known, host
    assert "no host key in the mine yet" not in known
    # the operator's account and key on every host, no sudo (declared false)
    for host in lab.hosts:
        assert operator in lab.read(host, f"/home/{OPERATOR}/.ssh/authorized_keys"), host
        assert lab.sh(host, "test", "-e", "/etc/sudoers.d/rolestack-operators", check=False).returncode == 1


def test_ssh_through_the_jump_box_reaches_every_host_with_known_hosts_verification(lab, operator):
    salt = lab.lab.salt_host
    for host in lab.hosts:
        ret = ssh(lab, salt, "-F", CLIENT_CONFIG, host, "echo", "$(id -un)", "$SSH_CONNECTION")
        assert ret.returncode == 0, (host, ret.stderr, login_diagnosis(lab, host))
        user, client, _port, server, _sport = ret.stdout.split()
        assert (user, client, server) == (OPERATOR, lab.address(salt), lab.address(host)), ret.stdout
    # nothing was learned on first use: every key came from /etc/ssh/ssh_known_hosts
    assert lab.sh(salt, "test", "-e", "/root/.ssh/known_hosts", check=False).returncode == 1
    # and a host known_hosts does not list is refused, not learned (StrictHostKeyChecking=yes; the lab's hosts share
    # the base image's host keys, so the alias is one known_hosts does not hold at all)
    ret = ssh(lab, salt, "-F", CLIENT_CONFIG, "-o", "HostKeyAlias=not-in-the-inventory", "db2", "true")
    assert ret.returncode == 255 and "Host key verification failed" in ret.stderr, ret.stderr


def login_diagnosis(lab, host):
    """What the host says of its boot and of pam_nologin's file (a CI run once met "System is booting up" here)."""
    script = (
        "systemctl is-system-running; ls -l --time-style=full-iso /run/nologin /etc/nologin 2>&1;"
        " systemctl show -p UserspaceTimestamp -p SystemState; systemctl show -p ActiveState"
        " -p ActiveEnterTimestamp -p InactiveEnterTimestamp systemd-user-sessions.service; systemctl list-jobs;"
        " journalctl -b --no-pager -n 40 -o short-iso -u systemd-user-sessions -u systemd-tmpfiles-setup 2>&1"
    )
    return lab.sh(host, "sh", "-c", script, check=False).stdout


def _direct(lab, source, target):
    """ssh from ``source`` straight to ``target``'s address, with the operator's key (no jump)."""
    return ssh(lab, source, "-i", KEY, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
               "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", f"{OPERATOR}@{lab.address(target)}", "true")  # fmt: skip


def test_ssh_from_another_host_is_refused(lab, operator):
    ret = _direct(lab, "app1", "db2")
    assert ret.returncode == 255, ret
    assert "timed out" in ret.stderr, ret.stderr  # db2's firewall drops it


@contextlib.contextmanager
def ssh_guard_removed(lab, host):
    """``host``'s firewall table deleted and its AllowUsers drop-in removed (sshd reloaded); its highstate restores."""
    lab.sh(host, "nft", "delete", "table", "inet", "rolestack")
    lab.sh(host, "rm", DROP_IN)
    lab.sh(host, "systemctl", "reload", "ssh")
    pid = lab.sh(host, "systemctl", "show", "-p", "MainPID", "--value", "ssh").stdout.strip()
    try:
        yield
    finally:
        result = lab.highstate(host)
    assert result["clean"], failures(result)
    assert "ssh-service" in changed_states(result)[host]  # reloaded by the changed drop-in...
    assert lab.sh(host, "systemctl", "show", "-p", "MainPID", "--value", "ssh").stdout.strip() == pid  # not restarted
    assert "table inet rolestack" in lab.sh(host, "nft", "list", "tables").stdout
    assert "AllowUsers" in lab.read(host, DROP_IN)


def test_the_jump_box_checks_pass_and_can_fail(lab, operator):
    for name in checks.security_ssh.CHECKS:
        ok, detail = checks.run_check(name, lab)
        assert ok, (name, detail)
    with ssh_guard_removed(lab, "db2"):
        ok, detail = checks.run_check("sshd_reachable_only_from_the_salt_host", lab)
        assert not ok and "db2:22 answered app1" in detail, detail
        ok, detail = checks.run_check("sshd_admits_only_the_salt_host", lab)
        assert not ok and "db2: allowusers []" in detail, detail
        assert _direct(lab, "app1", "db2").returncode == 0  # the hole the checks saw is real: app1 gets in
    for name in checks.security_ssh.CHECKS:
        assert checks.run_check(name, lab)[0], name
    assert _direct(lab, "app1", "db2").returncode == 255
