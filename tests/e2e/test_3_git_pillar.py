"""
The lab's pillar is a git repository on the master (/srv/git/pillar.git): a pushed edit is followed, an invalid one is
refused by the repository's pre-receive hook with the validator's message, and changes nothing.
"""

import subprocess

import pytest
import yaml

from tests.e2e.conftest import changed_states
from tests.e2e.conftest import failures
from tests.e2e.conftest import rolestack_lab

WATCHED = ["/etc/hosts", "/etc/resolv.conf", "/etc/motd", "/etc/issue.net"]
# git commands making a commit in the lab's clone: each is pushed to the master (git() below)
COMMITTING = ("commit", "revert")


def commit(lab, edit, message, push=True):
    """An inventory edit committed in the lab's clone (brought to the master's main first), then pushed."""
    rolestack_lab.pull_pillar(lab.lab)
    path = lab.pillar_repo / "inventory.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    git(lab, "commit", "-q", "-am", message, push=push)


def git(lab, *args, push=True):
    """git in the lab's pillar clone; a commit it makes is pushed to the master (a refused push fails the test)."""
    if args[0] == "revert":
        rolestack_lab.pull_pillar(lab.lab)
    cmd = ["git", "-C", str(lab.pillar_repo), "-c", "user.name=e2e", "-c", "user.email=e2e@rolestack.invalid"]
    proc = subprocess.run([*cmd, *args], check=True, capture_output=True, text=True)
    if push and args[0] in COMMITTING:
        pushed = rolestack_lab.push_pillar(lab.lab)
        assert pushed.returncode == 0, f"git push to the master refused:\n{pushed.stdout}{pushed.stderr}"
    return proc


def head(lab):
    """The tip of main of the master's pillar repository (the lab's clone brought to it first)."""
    rolestack_lab.pull_pillar(lab.lab)
    return git(lab, "rev-parse", "HEAD").stdout.strip()


def fingerprints(lab):
    sums = {}
    for host in lab.hosts:
        files = WATCHED + (["/etc/gdnsd/zones/production.wpdn"] if host == "salt" else [])
        sums[host] = lab.sh(host, "sha256sum", *files).stdout
    return sums


def assert_push_refused(lab, *words):
    """
    The commit at the tip of the lab's clone is refused by the master's pre-receive hook, its message naming
    every one of ``words`` (key path, bad value); the master's branch is unchanged, and the commit is dropped from
    the clone.
    """
    served = lab.sh(lab.lab.salt_host, "readlink", "/srv/pillar/current").stdout
    tip = lab.sh(lab.lab.salt_host, "git", "--git-dir=/srv/git/pillar.git", "rev-parse", "main").stdout
    try:
        proc = rolestack_lab.push_pillar(lab.lab)
        assert proc.returncode != 0, proc.stdout + proc.stderr
        assert "does not validate" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert all(word in proc.stderr for word in words), (words, proc.stderr)
        assert lab.sh(lab.lab.salt_host, "git", "--git-dir=/srv/git/pillar.git", "rev-parse", "main").stdout == tip
        assert lab.sh(lab.lab.salt_host, "readlink", "/srv/pillar/current").stdout == served
    finally:
        git(lab, "reset", "-q", "--hard", "HEAD~1")
    return proc


def assert_highstate_changes_nothing(lab):
    result = lab.highstate()
    assert result["clean"] and not any(changed_states(result).values()), (changed_states(result), failures(result))


def test_invalid_push_is_refused_with_the_key_path_and_changes_nothing(lab):
    before = fingerprints(lab)
    commit(lab, lambda data: data["hosts"]["db2"].update(address="10.99.0.12"), "db2 outside the network", push=False)
    assert_push_refused(lab, "hosts.db2.address", "10.99.0.12")
    assert_highstate_changes_nothing(lab)
    assert fingerprints(lab) == before


def test_a_pushed_edit_is_followed_and_a_revert_too(lab):
    def www_on_app1(data):
        data.setdefault("aliases", {})["www"] = ["app1"]

    commit(lab, www_on_app1, "www on app1")
    try:
        result = lab.highstate()
        assert result["clean"], failures(result)
        changes = changed_states(result)
        # only the zone follows (the salt host); no other host derives anything from an alias
        assert "salt-dns-zone" in changes["salt"]
        assert all(not ids for host, ids in changes.items() if host != "salt"), changes
        answer = lab.sh("app1", "dig", "+short", "+search", "+time=2", "www").stdout.split()
        assert answer == [lab.address("app1")]
    finally:
        git(lab, "revert", "--no-edit", "HEAD")
    result = lab.highstate()
    assert result["clean"], failures(result)
    assert lab.sh("app1", "dig", "+short", "+search", "+time=2", "www").stdout.split() == []


@pytest.fixture(autouse=True)
def _clean_tree_after(lab):
    yield
    status = subprocess.run(
        ["git", "-C", str(lab.pillar_repo), "status", "--porcelain"], capture_output=True, text=True
    )
    assert status.stdout == ""
