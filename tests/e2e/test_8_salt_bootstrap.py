"""
The lab's master is made by bootstrap/master.sh, the operator's command, inside the salt host (rolestack_lab
start_master): run again on the running platform, it reports zero changes in both its runs (salt-call --local
state.apply bootstrap, then the salt role through the master), and the master still answers every minion.
(The refusal of an invalid pillar push and a valid push reaching the minions: test_3_git_pillar.)
"""

from tests.e2e.conftest import rolestack_lab


def test_the_master_bootstrap_run_again_changes_nothing(lab):
    proc = rolestack_lab.bootstrap_master(lab.lab)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    returns = rolestack_lab.bootstrap_returns(proc)
    assert sorted(returns) == ["bootstrap", "salt"], proc.stdout[-3000:]
    for step, states in returns.items():
        assert isinstance(states, dict) and len(states) > 10, (step, states)
        failed = {sid: ret["comment"] for sid, ret in states.items() if not ret["result"]}
        changed = {sid: ret["changes"] for sid, ret in states.items() if ret["changes"]}
        assert not failed and not changed, (step, failed, changed)
    assert sorted(host for host, ret in lab.salt("*", "test.ping").items() if ret is True) == lab.hosts


def test_the_lab_master_config_is_the_bootstraps_plus_lab_conf(lab):
    """The lab writes no master configuration of its own beyond master.d/lab.conf (each setting said lab-only)."""
    listed = lab.sh(lab.lab.salt_host, "ls", "/etc/salt/master.d").stdout.split()
    assert listed == ["lab.conf", "rolestack-peer.conf", "rolestack.conf"], listed
    assert lab.sh(lab.lab.salt_host, "test", "-e", "/etc/salt/master", check=False).returncode != 0
    conf = lab.read(lab.lab.salt_host, "/etc/salt/master.d/lab.conf")
    settings = [line.split(":")[0] for line in conf.splitlines() if line and not line.startswith("#")]
    assert settings and conf.count("Lab-only") >= 4, conf
