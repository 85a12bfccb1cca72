"""
The base role applied for real, twice, with zero changes the second time. It must never change this
machine: salt-call runs in a private mount namespace where /etc is an overlay whose writes land in a
throwaway directory (the machine's /etc is only read).
"""

import json
import shutil
import subprocess
import textwrap

import pytest

from tests.support.paths import LOADER_DIRS
from tests.support.paths import PILLAR_EXAMPLE
from tests.support.paths import REPO
from tests.support.paths import STATES

# sshd, the operators' accounts and the host firewall (included by base) would change this machine beyond /etc
# (packages, /home, the live nftables ruleset, the running sshd): tests/functional/test_jumpbox.py dry-runs them
EXCLUDE = "exclude=ssh,firewall"

pytestmark = pytest.mark.skipif(not shutil.which("unshare"), reason="unshare (util-linux) is needed")


@pytest.fixture
def sandboxed_salt_call(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    dirs = "".join(f"{key}: [{value[0]}]\n" for key, value in LOADER_DIRS.items())
    (conf / "minion").write_text(
        f"id: app1\nroot_dir: {tmp_path / 'root'}\nfile_client: local\nuser: root\n"
        f"file_roots: {{base: [{STATES}]}}\npillar_roots: {{base: [{PILLAR_EXAMPLE}]}}\n"
        "ext_pillar:\n  - rolestack: {inventory: inventory.yaml}\n" + dirs
    )
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    upper.mkdir()
    work.mkdir()
    script = textwrap.dedent(f"""\
        set -e
        mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc
        {REPO}/.venv/bin/salt-call -c {conf} --local --out=json --retcode-passthrough "$@"
    """)

    def run(*args):
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    run.upper = upper
    return run


def _states(ret):
    assert ret.returncode == 0, ret.stderr[-3000:]
    return json.loads(ret.stdout)["local"]


def test_base_role_converges_then_reports_zero_changes(sandboxed_salt_call):
    with open("/etc/hosts", encoding="utf-8") as handle:
        hosts_before = handle.read()
    first = _states(sandboxed_salt_call("state.apply", "base", EXCLUDE))
    assert all(state["result"] is True for state in first.values()), first
    assert any(state["changes"] for state in first.values())
    second = _states(sandboxed_salt_call("state.apply", "base", EXCLUDE))
    assert all(state["result"] is True for state in second.values()), second
    changed = {key: state["changes"] for key, state in second.items() if state["changes"]}
    assert changed == {}, changed
    # the writes went to the overlay, and say what the role promises
    upper = sandboxed_salt_call.upper
    assert "nameserver 10.10.10.2" in (upper / "resolv.conf").read_text()
    assert "search production.wpdn" in (upper / "resolv.conf").read_text()
    assert (
        "10.10.10.11 db1-masterdb.production.wpdn db1-masterdb masterdb.production.wpdn masterdb"
        in (upper / "hosts").read_text()
    )
    assert "PRODUCTION" in (upper / "issue.net").read_text()
    assert not (upper / "ssh" / "sshd_config.d").exists()  # excluded: nothing of sshd's was written
    with open("/etc/hosts", encoding="utf-8") as handle:
        assert handle.read() == hosts_before, "the machine's own /etc/hosts changed"
