"""
Never two writable primaries, in the lab, tried as a tired operator would:

1. a masterdb move committed to the pillar, then a plain ``salt '*' state.highstate`` (no runner): db2 is not made
   writable while it replicates and db1-masterdb (still the running primary) is not made read-only; exactly one
   db host takes writes and both db states fail naming ``salt-run db.switchover``. Reverted: the platform converges.
2. a switchover killed right after its promotion (db2 writable, db1-masterdb read-only, the inventory unchanged):
   the next highstate leaves exactly one writable host; then ``db.rejoin`` and ``db.switchover`` bring the lab back.
3. ``repl@<address>`` accounts of hosts that are no db hosts of the inventory are dropped on masterdb.

Runs after test_7 and the other test_8 modules (db1-masterdb the primary) and hands the lab back that way.
"""

import os
import signal
import subprocess
import time

import pytest
import rolestack_db_plan as dbplan

from tests.e2e.conftest import failures
from tests.e2e.conftest import rolestack_lab
from tests.e2e.test_3_git_pillar import git
from tests.e2e.test_3_git_pillar import head as pillar_head
from tests.e2e.test_7_db_switchover import MASTER
from tests.e2e.test_7_db_switchover import REPLICA
from tests.e2e.test_7_db_switchover import ZONE
from tests.e2e.test_7_db_switchover import assert_primary
from tests.e2e.test_7_db_switchover import salt_run
from tests.e2e.test_7_db_switchover import sql
from tests.e2e.test_7_db_switchover import status

RUNNER = "salt-run db.switchover"


def writable(lab):
    """The db hosts taking writes (read_only OFF)."""
    return [host for host in (MASTER, REPLICA) if not status(lab, host)["read_only"]]


def assert_db_states_name_the_runner(result, states):
    """Each of ``states`` ({host: state id}) failed, its comment naming the runner; no db host has a traceback."""
    failed = failures(result)
    for host, sid in states.items():
        assert sid in failed.get(host, {}), (host, sid, failed)
        assert RUNNER in failed[host][sid] and "Nothing was changed" in failed[host][sid], failed[host][sid]
    assert "Traceback" not in str(failed)


@pytest.fixture(scope="module", autouse=True)
def primary_is_masterdb(lab):
    assert_primary(lab, MASTER, REPLICA)


def test_a_committed_masterdb_move_and_a_plain_highstate_leave_one_primary(lab):
    rolestack_lab.pull_pillar(lab.lab)
    path = lab.pillar_repo / "inventory.yaml"
    path.write_text(dbplan.move_masterdb(path.read_text(), MASTER, REPLICA))
    git(lab, "commit", "-qam", "move masterdb to db2, without the runner")
    try:
        result = lab.highstate()
        assert writable(lab) == [MASTER]
        assert_db_states_name_the_runner(
            result, {REPLICA: "db-replication-writable", MASTER: "db-replication-read-only"}
        )
        assert f"{REPLICA} was not made writable: it replicates from {MASTER}.{ZONE}" in str(failures(result))
        # nothing moved: db2 still replicates from db1-masterdb, which replicates from nobody
        replica = status(lab, REPLICA)
        assert replica["Master_Host"] == f"{MASTER}.{ZONE}" and replica["Slave_IO_Running"] == "Yes", replica
        assert not status(lab, MASTER)["replica_configured"]
    finally:
        git(lab, "revert", "--no-edit", "HEAD")
    result = lab.highstate()
    assert result["clean"], failures(result)
    assert_primary(lab, MASTER, REPLICA)


def interrupted_switchover(lab, new):
    """salt-run db.switchover killed (SIGKILL) as soon as it reported the promotion of ``new``."""
    handle = lab.lab
    # inside the salt host (the master's own configuration); its PID there, to kill salt-run itself
    pidfile = "/run/e2e-interrupted-switchover.pid"
    cmd = ["nsenter", "-t", str(rolestack_lab.container_pid1(handle, handle.salt_host)), "-a", "sh", "-c",
           f'echo $$ > {pidfile} && exec "$@"', "sh", str(rolestack_lab.VENV / "bin/salt-run"), "--out=json",
           "db.switchover", new]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**rolestack_lab.CLEAN_ENV, "PYTHONUNBUFFERED": "1"})  # fmt: skip

    def kill():
        rolestack_lab.in_host(handle, handle.salt_host, "sh", "-c", f"kill -KILL $(cat {pidfile})", check=False)

    seen = []
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            seen.append(line)
            if "takes writes (write block" in line:
                kill()
                break
            assert time.monotonic() < deadline, "".join(seen)
    finally:
        if proc.poll() is None:
            kill()
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert any("takes writes (write block" in line for line in seen), "".join(seen)[-3000:]
    return proc.returncode


def test_a_switchover_killed_after_its_promotion_leaves_one_primary_after_a_highstate(lab):
    before = pillar_head(lab)
    assert interrupted_switchover(lab, REPLICA) == -signal.SIGKILL
    assert writable(lab) == [REPLICA]
    result = lab.highstate()
    assert writable(lab) == [REPLICA]
    failed = failures(result)
    assert "db-replication-read-only" in failed[REPLICA], failed
    assert f"{REPLICA} was not made read-only: it is the running primary" in failed[REPLICA]["db-replication-read-only"]
    assert_db_states_name_the_runner(result, {REPLICA: "db-replication-read-only", MASTER: "db-replication-writable"})
    # the runner had not committed: the inventory still names db1-masterdb
    assert pillar_head(lab) == before
    # the way back, as docs/roles/db.md says: the old primary rejoins as a replica, then the primary moves back
    if not status(lab, MASTER)["replica_configured"]:
        code, ret = salt_run(lab, "db.rejoin", MASTER)
        assert code == 0 and ret["primary"] == REPLICA, ret
    code, ret = salt_run(lab, "db.switchover", MASTER)
    assert code == 0 and not ret["problems"], ret
    assert_primary(lab, MASTER, REPLICA)
    result = lab.highstate()
    assert result["clean"], failures(result)


def test_replication_accounts_of_hosts_gone_from_the_inventory_are_dropped(lab):
    gone = "10.10.10.99"
    sql(lab, MASTER, f"CREATE USER 'repl'@'{gone}' IDENTIFIED BY 'left-the-platform' REQUIRE X509; "
                     f"GRANT REPLICATION SLAVE ON *.* TO 'repl'@'{gone}'")  # fmt: skip
    result = lab.highstate(MASTER)
    assert result["clean"], failures(result)
    dropped = next(state for state in result["returns"][MASTER].values()
                   if state["__id__"] == "db-replication-account-elsewhere")  # fmt: skip
    assert dropped["changes"] == {"deleted": [f"repl@{gone}"]}, dropped
    kept = {lab.address(MASTER), lab.address(REPLICA)}
    for host in (MASTER, REPLICA):
        deadline = time.monotonic() + 60
        while set(sql(lab, host, "SELECT Host FROM mysql.user WHERE User = 'repl'").stdout.split()) != kept:
            assert time.monotonic() < deadline, (host, sql(lab, host, "SELECT Host FROM mysql.user").stdout)
            time.sleep(0.5)
