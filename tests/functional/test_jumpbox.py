"""
The jump box (states/ssh, states/salt/jumpbox.sls, _modules/rolestack_jumpbox.py) through the state compiler with
the pillar the ext_pillar derives from pillar.example. Nothing on this machine changes: show_sls and test=True only;
the rendered sshd configuration is checked by ``sshd -t -f`` (no daemon touched), the ssh_config by ``ssh -G``
(nothing connects), known_hosts by ``ssh-keygen -F``. The e2e tier applies all of it in the lab.
"""

import os
import shutil
import subprocess

import pytest
import yaml

SUDO_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICEpgLJbI0FNRcrtODcQl9AWi4DkWMmgp7Fra84k+1ZF sudoer@example.invalid"


def _args(high, state_id, module):
    merged = {}
    for arg in high[state_id][module]:
        if isinstance(arg, dict):
            merged.update(arg)
    return merged


@pytest.fixture
def with_sudoer(pillar_tree):
    inventory = pillar_tree / "inventory.yaml"
    data = yaml.safe_load(inventory.read_text())
    data["operators"]["carol"] = {"ssh_keys": [SUDO_KEY], "sudo": True}
    inventory.write_text(yaml.safe_dump(data))


def _sshd_config(loaders, high):
    """The drop-in as the SLS writes it: the text the ext_pillar derived (rolestack:ssh:sshd_config)."""
    text = _args(high, "ssh-sshd-config", "file")["contents"]
    assert text == loaders.modules.pillar.get("rolestack:ssh:sshd_config", unmask=True)
    return text


def test_ssh_sls_on_a_host_admits_the_salt_host_only_and_reloads_sshd(make_loaders, with_sudoer):
    loaders = make_loaders("app1")
    high = loaders.modules.state.show_sls("ssh")
    assert isinstance(high, dict), high
    config = _args(high, "ssh-sshd-config", "file")
    assert config["name"] == "/etc/ssh/sshd_config.d/00-rolestack.conf"
    assert config["check_cmd"] == "/usr/sbin/sshd -t -f"  # the candidate is checked before it replaces the file
    service = _args(high, "ssh-service", "rolestack_service")
    assert service["reload"] is True and service["name"] == "ssh"
    assert {"file": "ssh-sshd-config"} in service["watch"] and {"file": "base-sshd-banner"} in service["watch"]
    text = _sshd_config(loaders, high)
    for line in ("PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin no"):
        assert line in text.splitlines()
    assert "AllowUsers *@10.10.10.2 *@127.0.0.1 *@::1" in text.splitlines()
    # the operators: an account and authorized_keys each, sudo only for the one who declared it
    assert _args(high, "ssh-operator-example-operator", "user")["groups"] == ["rolestack-operators"]
    keys = _args(high, "ssh-operator-example-operator-keys", "file")
    assert keys["name"] == "/home/example-operator/.ssh/authorized_keys" and "EXAMPLE-KEY" in keys["contents"]
    sudoers = _args(high, "ssh-operators-sudoers", "file")
    assert sudoers["check_cmd"] == "/usr/sbin/visudo -cf" and sudoers["mode"] == "0440"
    assert "carol ALL=(ALL:ALL) NOPASSWD: ALL" in sudoers["contents"]
    assert "example-operator" not in sudoers["contents"]


def test_ssh_sls_on_the_salt_host_does_not_restrict_and_without_sudoers_none_is_left(make_loaders):
    loaders = make_loaders("salt")
    high = loaders.modules.state.show_sls("ssh")
    text = _sshd_config(loaders, high)
    assert "AllowUsers" not in text and "PermitRootLogin no" in text
    assert "file.absent" not in str(high) and "absent" in high["ssh-operators-sudoers"]["file"]
    assert "ssh-sudo-pkg" not in high


@pytest.mark.parametrize("minion_id", ["app1", "salt"])
def test_base_includes_ssh_and_the_firewall_where_it_guards_a_port(make_loaders, minion_id):
    high = make_loaders(minion_id).modules.state.show_sls("base")
    assert isinstance(high, dict), high
    assert {"ssh-sshd-config", "ssh-service", "base-sshd-banner"} <= set(high)
    assert ("firewall-load" in high) is (minion_id != "salt")
    motd = _args(high, "base-banner-/etc/motd", "file")["contents"]
    issue = _args(high, "base-banner-/etc/issue.net", "file")["contents"]
    assert "ProxyJump" not in issue and " environment level: production" in issue
    assert ("ProxyJump salt" in motd) is (minion_id == "salt")


def test_the_firewall_of_a_host_admits_ssh_from_the_salt_host_only(make_loaders):
    loaders = make_loaders("app1")
    text = loaders.modules.rolestack_kv.firewall_ruleset()
    # the file the SLS writes: the pillar's text (derived by the ext_pillar), the module's
    assert _args(loaders.modules.state.show_sls("firewall"), "firewall-ruleset", "file")["contents"] == text
    assert "tcp dport 22 ip saddr @ssh_allow_v4 accept" in text
    assert "elements = { 10.10.10.2/32 }" in text and 'tcp dport 22 iif "lo" accept' in text
    assert "tcp dport 22 drop" in text
    if shutil.which("nft"):
        assert make_loaders("db2").modules.rolestack_kv.firewall_check() is True  # nft -c: nothing loaded


@pytest.mark.parametrize("minion_id", ["salt", "app1"])
def test_dry_run_of_base_and_ssh(make_loaders, minion_id):
    ret = make_loaders(minion_id).modules.state.sls("base", test=True)
    assert not ret.failed, ret.raw
    assert "Traceback" not in str(ret.raw)


def test_salt_jumpbox_dry_run_and_the_refusal_elsewhere(make_loaders):
    ret = make_loaders("salt").modules.state.sls("salt.jumpbox", test=True)
    assert not ret.failed, ret.raw
    high = make_loaders("db2").modules.state.show_sls("salt.jumpbox")
    assert isinstance(high, list) and "salt.jumpbox applies only to the host with role salt" in str(high)


def test_the_ssh_config_jumps_through_the_salt_host(make_loaders, tmp_path):
    loaders = make_loaders("salt")
    path = tmp_path / "ssh_config"
    path.write_text(loaders.modules.rolestack_jumpbox.ssh_config())
    high = loaders.modules.state.show_sls("salt.jumpbox")
    assert _args(high, "salt-jumpbox-ssh-config", "file")["contents"] == path.read_text()

    def resolved(host):
        out = subprocess.run(["ssh", "-G", "-F", str(path), host], capture_output=True, text=True, check=True).stdout
        return dict(line.split(" ", 1) for line in out.splitlines())

    db2 = resolved("db2")
    assert (db2["hostname"], db2["proxyjump"], db2["stricthostkeychecking"]) == ("10.10.10.12", "salt", "true")
    assert resolved("db2.production.wpdn")["hostname"] == "10.10.10.12"
    salt = resolved("salt")
    assert salt["hostname"] == "10.10.10.2" and "proxyjump" not in salt
    assert "proxyjump" not in resolved("unknown-host")


def test_known_hosts_from_the_mine(make_loaders, tmp_path):
    loaders = make_loaders("salt")
    keydir = tmp_path / "keys"
    keydir.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keydir / "ssh_host_ed25519_key")], check=True
    )
    before = loaders.modules.rolestack_jumpbox.known_hosts()
    assert "# salt: no host key in the mine yet" in before and "# db2: no host key in the mine yet" in before
    # masterless: mine.send stores in the local mine, mine.get reads it (the same functions the base role sends)
    assert loaders.modules.mine.send("ssh.host_keys", keydir=str(keydir), private=False, certs=False)
    text = loaders.modules.rolestack_jumpbox.known_hosts()
    public = (keydir / "ssh_host_ed25519_key.pub").read_text().split()
    assert f"salt,salt.production.wpdn,10.10.10.2 {public[0]} {public[1]}" in text.splitlines()
    assert "PRIVATE" not in text
    path = tmp_path / "known_hosts"
    path.write_text(text)
    for name in ("salt", "salt.production.wpdn", "10.10.10.2"):
        found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(path)], capture_output=True, text=True)
        assert found.returncode == 0 and public[1] in found.stdout, name
    assert subprocess.run(["ssh-keygen", "-F", "db2", "-f", str(path)], capture_output=True).returncode == 1


SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


@pytest.mark.skipif(
    SSHD is None,
    reason="sshd is not installed on this machine (Debian package openssh-server): the rendered sshd configuration "
    "is not checked by sshd -t here (the e2e tier's hosts run it, through the state's check_cmd)",
)
@pytest.mark.parametrize("minion_id", ["app1", "salt"])
def test_sshd_accepts_the_rendered_configuration(make_loaders, tmp_path, minion_id):
    loaders = make_loaders(minion_id)
    config = tmp_path / "sshd_config"
    config.write_text(_sshd_config(loaders, loaders.modules.state.show_sls("ssh")))
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    # -t: check only, -f: this file, -h: a throwaway host key; the machine's sshd is not touched
    checked = subprocess.run([SSHD, "-t", "-f", str(config), "-h", str(key)], capture_output=True, text=True)
    if "privilege separation directory" in checked.stderr:
        pytest.skip(f"sshd -t needs its privilege separation directory here: {checked.stderr.strip()}")
    assert checked.returncode == 0, checked.stderr
    config.write_text(config.read_text() + "PermitRootLogin maybe\n")
    assert subprocess.run([SSHD, "-t", "-f", str(config), "-h", str(key)], capture_output=True).returncode != 0
