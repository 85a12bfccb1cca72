"""
An old primary that comes back after a failover, highstated as the inventory now says (a replica of the new
primary), in the lab:

1. it lost nothing (every transaction it wrote reached the promoted replica): its highstate points it at the new
   primary from its own binary log position and it replicates; then a switchover gives it the primary back;
2. it forked (a transaction written on it that the new primary never received): its highstate fails in the db
   state with a message naming the host, the errant GTID, the source and the rebuild, and changes nothing
   (no source configured, no replica thread, GTID positions as they were); ``salt-run db.rejoin`` refuses too;
   the documented fix (rebuild: ``lab-replace``) brings it back replicating; then a highstate of every host has
   no failure and a second one no change. The lab is handed back with db1-masterdb as the primary.

The primary's MariaDB is killed as in test_7_db_switchover.py (unit masked for this boot, then SIGKILL).
"""

import pytest
from rolestack_highstate import wait_for

from tests.e2e.conftest import changed_states
from tests.e2e.conftest import lab_cli
from tests.e2e.test_7_db_switchover import MASTER
from tests.e2e.test_7_db_switchover import REPLICA
from tests.e2e.test_7_db_switchover import ZONE
from tests.e2e.test_7_db_switchover import assert_primary
from tests.e2e.test_7_db_switchover import salt_run
from tests.e2e.test_7_db_switchover import sql
from tests.e2e.test_7_db_switchover import status

SOURCE = f"{REPLICA}.{ZONE}"


def rows(lab, host):
    proc = sql(lab, host, "SELECT id FROM e2e.returned ORDER BY id", check=False)
    return proc.stdout.split() if proc.returncode == 0 else None


def wait_same_rows(lab, replica, primary, timeout=90):
    wait_for(
        lambda: rows(lab, replica) == rows(lab, primary),
        timeout,
        lambda: f"the rows of {primary} on {replica} ({rows(lab, replica)} and {rows(lab, primary)})",
    )


def fail_over(lab):
    """db1-masterdb's MariaDB dies for good; db2 is promoted; db1's MariaDB comes back read-only."""
    lab.sh(MASTER, "systemctl", "mask", "--runtime", "mariadb")
    lab.sh(MASTER, "systemctl", "kill", "-s", "KILL", "mariadb", check=False)
    code, ret = salt_run(lab, "db.failover")
    assert code == 0 and isinstance(ret, dict) and not ret["problems"] and ret["promoted"] == REPLICA, ret
    lab.sh(MASTER, "systemctl", "unmask", "--runtime", "mariadb")
    lab.sh(MASTER, "systemctl", "start", "mariadb")
    back = status(lab, MASTER)
    assert back["read_only"] and back["role"] == "standalone", back


def replica_state(result, host):
    states = result["returns"][host]
    assert isinstance(states, dict), states
    return next(state for state in states.values() if state["__id__"] == "db-replication-replica")


@pytest.fixture(scope="module")
def table(lab):
    assert_primary(lab, MASTER, REPLICA)
    sql(lab, MASTER, "CREATE DATABASE IF NOT EXISTS e2e; DROP TABLE IF EXISTS e2e.returned; "
                     "CREATE TABLE e2e.returned (id INT PRIMARY KEY, host VARCHAR(64)); "
                     f"INSERT INTO e2e.returned VALUES (1, '{MASTER}'), (2, '{MASTER}')")  # fmt: skip
    wait_same_rows(lab, REPLICA, MASTER)


def test_an_old_primary_that_lost_nothing_comes_back_replicating_on_highstate(lab, table):
    fail_over(lab)
    sql(lab, REPLICA, f"INSERT INTO e2e.returned VALUES (3, '{REPLICA}')")
    binlog = status(lab, MASTER)["gtid_binlog_pos"]
    result = lab.highstate(MASTER)
    state = replica_state(result, MASTER)
    assert state["result"] is True, state
    assert state["comment"] == f"replicating from {SOURCE}", state
    assert state["changes"]["gtid_slave_pos"]["new"] == binlog, state
    row = next(row for row in result["rows"] if row["host"] == MASTER)
    assert row["failed"] == 0, result["returns"][MASTER]
    assert_primary(lab, REPLICA, MASTER)
    sql(lab, REPLICA, f"INSERT INTO e2e.returned VALUES (4, '{REPLICA}')")
    wait_same_rows(lab, MASTER, REPLICA)
    assert rows(lab, MASTER) == ["1", "2", "3", "4"]
    # the primary back to db1-masterdb for the next case
    code, ret = salt_run(lab, "db.switchover", MASTER)
    assert code == 0 and not ret["problems"], ret
    assert_primary(lab, MASTER, REPLICA)


def test_a_forked_old_primary_is_refused_by_its_highstate_and_left_alone(lab, table):
    fail_over(lab)
    # written on the old primary after it came back (root passes read_only), never replicated: an errant GTID
    sql(lab, MASTER, f"INSERT INTO e2e.returned VALUES (100, '{MASTER} alone')")
    before = status(lab, MASTER)
    errant = before["gtid_binlog_pos"]
    result = lab.highstate(MASTER)
    state = replica_state(result, MASTER)
    assert state["result"] is False and state["changes"] == {}, state
    for part in (f"{MASTER} holds transactions the source {SOURCE} never had: {errant}", "Nothing was changed",
                 f"salt-run db.rejoin {MASTER} refuses it too", f"salt-run minion_key.replace {MASTER}",
                 f"make lab-replace HOST={MASTER}"):  # fmt: skip
        assert part in state["comment"], (part, state["comment"])
    assert "Traceback" not in state["comment"]
    after = status(lab, MASTER)
    assert not after["replica_configured"] and after["Slave_IO_Running"] is None, after
    for key in ("gtid_slave_pos", "gtid_binlog_pos", "read_only"):
        assert after[key] == before[key], key
    assert rows(lab, REPLICA).count("100") == 0
    # the runner says the same
    code, ret = salt_run(lab, "db.rejoin", MASTER)
    assert code != 0 and f"{MASTER} cannot rejoin" in str(ret) and errant in str(ret), ret


def test_the_forked_old_primary_rebuilt_then_the_platform_converges(lab, table):
    proc = lab_cli("replace", MASTER, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:]
    lab.refresh()
    assert_primary(lab, REPLICA, MASTER)
    wait_same_rows(lab, MASTER, REPLICA)
    assert "100" not in rows(lab, MASTER)
    first = lab.highstate()
    assert first["clean"] and all(row["failed"] == 0 for row in first["rows"]), first["rows"]
    second = lab.highstate()
    changed = changed_states(second)
    assert all(row["failed"] == 0 for row in second["rows"]) and not any(changed.values()), changed
    # hand the lab back with db1-masterdb as the primary
    code, ret = salt_run(lab, "db.switchover", MASTER)
    assert code == 0 and not ret["problems"], ret
    assert_primary(lab, MASTER, REPLICA)
