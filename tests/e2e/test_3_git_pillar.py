"""The lab's pillar is a git repository: a committed edit is followed, an invalid one is refused and changes nothing."""

import subprocess

import pytest
import yaml

from tests.e2e.conftest import changed_states
from tests.e2e.conftest import failures

WATCHED = ["/etc/hosts", "/etc/resolv.conf", "/etc/motd", "/etc/issue.net"]


def commit(lab, edit, message):
    path = lab.pillar_repo / "inventory.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    git(lab, "commit", "-q", "-am", message)


def git(lab, *args):
    cmd = ["git", "-C", str(lab.pillar_repo), "-c", "user.name=e2e", "-c", "user.email=e2e@rolestack.invalid"]
    subprocess.run([*cmd, *args], check=True, capture_output=True)


def fingerprints(lab):
    sums = {}
    for host in lab.hosts:
        files = WATCHED + (["/etc/gdnsd/zones/production.wpdn"] if host == "salt" else [])
        sums[host] = lab.sh(host, "sha256sum", *files).stdout
    return sums


def assert_highstate_refused(lab, *words):
    """A highstate of every host is refused, each return naming every one of ``words`` (key path, bad value)."""
    returns = lab.salt("*", "state.highstate")
    assert sorted(returns) == lab.hosts
    for host, ret in returns.items():
        # salt refuses the highstate: the return is the list of pillar errors, no state ran
        assert isinstance(ret, list), (host, ret)
        text = "\n".join(ret)
        assert all(word in text for word in words), (words, text)
        assert "Traceback" not in text


def test_invalid_commit_is_refused_with_the_key_path_and_changes_nothing(lab):
    before = fingerprints(lab)
    commit(lab, lambda data: data["hosts"]["db2"].update(address="10.99.0.12"), "db2 outside the network")
    try:
        assert_highstate_refused(lab, "hosts.db2.address", "10.99.0.12")
        assert fingerprints(lab) == before
    finally:
        git(lab, "revert", "--no-edit", "HEAD")
    result = lab.highstate()
    assert result["clean"] and not any(changed_states(result).values()), (changed_states(result), failures(result))


def test_a_committed_edit_is_followed_and_a_revert_too(lab):
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
