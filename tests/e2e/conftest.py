"""
e2e tier: the small lab (salt, db1-masterdb, db2, sessions1, memcache-alpha1, memcache-alpha2, redis-beta1, app1),
brought up once per test run
with the same command an operator uses (`lab/rolestack_lab.py up`), torn down at the end. Test modules are
numbered: they run in that order (the later ones change the lab: a pillar commit, a replaced host, lab-down).

ROLESTACK_E2E_REUSE=1 runs the tests against an e2e lab that is already up (`make lab LAB=e2e PROFILE=small`)
and leaves it up: for iterating on one role's checks. ROLESTACK_E2E_LAB=<name> uses another lab name.
"""

import contextlib
import json
import os
import subprocess
import sys

import pytest
import rolestack_highstate

from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "lab"))
import rolestack_lab

# another name lets a second checkout run its own e2e lab at the same time
LAB_NAME = os.environ.get("ROLESTACK_E2E_LAB", "e2e")
PROFILE = "small"
REUSE = os.environ.get("ROLESTACK_E2E_REUSE") == "1"


def lab_cli(*args, timeout=1800):
    """Run the lab's CLI as an operator would; returns the CompletedProcess (stdout and stderr together)."""
    return subprocess.run(
        [sys.executable, str(REPO / "lab" / "rolestack_lab.py"), "--name", LAB_NAME, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def _summaries(result):
    """rolestack_highstate.summarize of each host of a lab highstate (rolestack_lab.highstate's result)."""
    hosts = [row["host"] for row in result["rows"]]
    return rolestack_highstate.summarize_all(result["returns"], hosts + sorted(set(result["returns"]) - set(hosts)))


def failures(result):
    """What made a highstate unclean: per host, a missing return or each failed state's id and comment."""
    found = {}
    for host, summary in _summaries(result).items():
        if "error" in summary:
            found[host] = summary["error"][:500]
        elif summary["failed"]:
            found[host] = {sid: comment[:400] for sid, comment in summary["failed"]}
    return found


def changed_states(result):
    """What a highstate changed: per host that returned its states, ``{state id: changes}`` (empty: no change)."""
    return {host: dict(summary["changed"]) for host, summary in _summaries(result).items() if "error" not in summary}


class LabHandle:
    """What the tests need from a running lab: its hosts, the salt CLI, commands inside hosts."""

    def __init__(self, up_output):
        self.up_output = up_output
        self.refresh()

    def refresh(self):
        self.lab = rolestack_lab.Lab(LAB_NAME)

    @property
    def hosts(self):
        return sorted(self.lab.hosts)

    def address(self, host):
        return self.lab.hosts[host]["address"]

    def salt(self, *args, timeout=900):
        """salt CLI with JSON output: {minion: return}."""
        proc = rolestack_lab.salt_cmd(self.lab, "--out=json", "--static", *args, check=False, timeout=timeout)
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"salt {args}: not JSON\n{proc.stdout}\n{proc.stderr}") from None

    def salt_run(self, *args, timeout=900):
        """salt-run with JSON output: the runner's return; a failed runner raises AssertionError with its output."""
        proc = rolestack_lab.salt_run(self.lab, "--out=json", *args, check=False, timeout=timeout)
        try:
            ret = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"salt-run {args}: not JSON\n{proc.stdout}\n{proc.stderr}") from None
        if proc.returncode:
            raise AssertionError(f"salt-run {args} failed ({proc.returncode}): {ret}")
        return ret

    def highstate(self, target="*"):
        self.refresh()
        return rolestack_lab.highstate(self.lab, target)

    def sh(self, host, *cmd, check=True):
        return rolestack_lab.in_host(self.lab, host, *cmd, check=check, timeout=120)

    @contextlib.contextmanager
    def unplugged(self, host):
        """``host`` down to the others (its cable unplugged at the switch), plugged back afterwards."""
        rolestack_lab.set_cable(self.lab, host, False)
        try:
            yield
        finally:
            rolestack_lab.set_cable(self.lab, host, True)

    def read(self, host, path):
        return self.sh(host, "cat", path).stdout

    @property
    def pillar_repo(self):
        return self.lab.pillar_repo


@pytest.fixture(scope="session")
def lab():
    if REUSE:
        running = rolestack_lab.Lab(LAB_NAME)
        if not running.hosts or not all(rolestack_lab.container_pid1(running, host) for host in running.hosts):
            pytest.fail(
                f"ROLESTACK_E2E_REUSE=1 but lab {LAB_NAME} is not up: make lab LAB={LAB_NAME} PROFILE={PROFILE}"
            )
        yield LabHandle(f"lab {LAB_NAME} ({running.state['profile']}) up in (reused)")
        return
    lab_cli("down")  # leftovers of an interrupted run
    proc = lab_cli("up", "--profile", PROFILE)
    if proc.returncode != 0:
        lab_cli("down")
        pytest.fail(f"make lab (profile {PROFILE}) failed:\n{proc.stdout[-6000:]}")
    try:
        yield LabHandle(proc.stdout)
    finally:
        lab_cli("down")
