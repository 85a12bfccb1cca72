"""
Moving the MariaDB primary in the lab: a switchover by the db runner and back, one triggered by a pillar commit
and the orchestrate SLS, a refused switchover, and a failover after masterdb's MariaDB is killed (-9), then the
dead host rebuilt as a replica. The tests run in order and hand the lab back with db1-masterdb as the primary.

Killing MariaDB: the Debian unit restarts it after an abnormal exit (Restart=on-abnormal, 5 s), read_only ON by
the db role's configuration; the replicas' IO threads would then reconnect and the failover would rightly refuse
("not dead"). ``systemctl stop`` is an orderly shutdown, not a crash. So the unit is masked for this boot first
(``systemctl mask --runtime``: systemd refuses the restart, the unit stays failed) and then SIGKILLed: an abrupt
death that stays dead until the host is rebuilt (the runtime mask lives in /run and goes with the old container).
"""

import json
import subprocess
import threading
import time

import pytest
import rolestack_db_plan as dbplan
import yaml
from rolestack_highstate import wait_for

from tests.e2e.conftest import lab_cli
from tests.e2e.conftest import rolestack_lab
from tests.e2e.test_3_git_pillar import git

MASTER, REPLICA = "db1-masterdb", "db2"
ZONE = "production.wpdn"
APP_USER, APP_PASSWORD = "e2eswitch", "e2e-switch-password-0123"


def salt_run(lab, *args, timeout=900):
    """salt-run with JSON output: (exit code, the return; progress events before it are skipped, text on errors)."""
    proc = rolestack_lab.salt_run(lab.lab, "--out=json", *args, check=False, timeout=timeout)
    decoder, text, position, last = json.JSONDecoder(), proc.stdout, 0, None
    while position < len(text):
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        try:
            last, position = decoder.raw_decode(text, position)
        except ValueError:
            last = text[position:]
            break
    return proc.returncode, last if last is not None else proc.stdout + proc.stderr


def sql(lab, host, statement, check=True):
    return lab.sh(host, "mariadb", "--batch", "--skip-column-names", "-e", statement, check=check)


def app_sql(lab, host, statement, check=True):
    """A statement from app1 as an application account (no READ_ONLY ADMIN: read_only applies to it)."""
    return lab.sh("app1", "mariadb", "--batch", "--skip-column-names", "--connect-timeout=2", "-h", host,
                  "-u", APP_USER, f"-p{APP_PASSWORD}", "-e", statement, check=check)  # fmt: skip


def count(lab, host):
    proc = sql(lab, host, "SELECT COUNT(*) FROM e2e.switch", check=False)
    return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip().isdigit() else None


def wait_rows(lab, host, expected, timeout=90):
    wait_for(
        lambda: count(lab, host) == expected, timeout, lambda: f"{expected} rows on {host} (it has {count(lab, host)})"
    )


def status(lab, host):
    return lab.salt(host, "mariadb_replication.status")[host]


def db_status(lab):
    code, ret = salt_run(lab, "db.status")
    assert code == 0 and isinstance(ret, dict), ret
    return ret


def assert_primary(lab, primary, replica):
    """primary takes writes; replica replicates from its FQDN over verified TLS, read-only."""
    state = db_status(lab)
    assert state["primary"] == primary and state["masterdb"] == primary and state["ok"], state
    new = status(lab, primary)
    assert new["role"] == "primary" and not new["read_only"] and not new["replica_configured"], new
    old = status(lab, replica)
    assert old["read_only"] and old["Master_Host"] == f"{primary}.{ZONE}", old
    assert old["Slave_IO_Running"] == "Yes" and old["Slave_SQL_Running"] == "Yes", old
    assert old["Master_SSL_Verify_Server_Cert"] == "Yes" and old["Using_Gtid"] == "Slave_Pos", old


def assert_names_follow(lab, primary, hosts=("app1", "salt", MASTER, REPLICA)):
    """masterdb in /etc/hosts and in the salt host's DNS points at the primary, on these hosts."""
    address = lab.address(primary)
    for host in hosts:
        line = next(line for line in lab.read(host, "/etc/hosts").splitlines() if f"masterdb.{ZONE}" in line.split())
        assert line.split()[0] == address, (host, line)
        assert lab.sh(host, "dig", "+short", f"masterdb.{ZONE}").stdout.split() == [address], host


def inventory(lab):
    rolestack_lab.pull_pillar(lab.lab)
    return yaml.safe_load((lab.pillar_repo / "inventory.yaml").read_text())


def last_commit(lab):
    rolestack_lab.pull_pillar(lab.lab)  # the runner commits on the master's branch
    return subprocess.run(["git", "-C", str(lab.pillar_repo), "log", "-1", "--format=%s"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip


def is_masterdb(lab, host):
    spec = inventory(lab)["hosts"][host] or {}
    return "masterdb" in spec.get("roles", ["masterdb"] if "-masterdb" in host else [])


@pytest.fixture(scope="module")
def rows(lab):
    """A table and an application account on the primary; returns a counter of the rows written."""
    sql(lab, MASTER, "CREATE DATABASE IF NOT EXISTS e2e; CREATE TABLE IF NOT EXISTS e2e.switch "
                     "(id INT AUTO_INCREMENT PRIMARY KEY, host VARCHAR(64)); DELETE FROM e2e.switch; "
                     f"CREATE USER IF NOT EXISTS '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'; "
                     f"GRANT ALL ON e2e.* TO '{APP_USER}'@'%'")  # fmt: skip
    return {"n": 0}


def write(lab, rows, host, how_many=20):
    """Rows written by the application, through host (a name it resolves: masterdb, or a host's FQDN)."""
    values = ",".join(f"('{host}')" for _ in range(how_many))
    app_sql(lab, host, f"INSERT INTO e2e.switch (host) VALUES {values}")
    rows["n"] += how_many


def test_the_platform_starts_with_masterdb_as_the_primary(lab, rows):
    assert_primary(lab, MASTER, REPLICA)
    write(lab, rows, f"masterdb.{ZONE}")
    wait_rows(lab, REPLICA, rows["n"])


def test_switchover_by_runner(lab, rows):
    write(lab, rows, f"masterdb.{ZONE}")
    code, ret = salt_run(lab, "db.switchover", REPLICA)
    assert code == 0 and isinstance(ret, dict) and not ret["problems"], ret
    print(json.dumps({"switchover": {k: ret[k] for k in ("write_block_seconds", "seconds", "steps")}}))
    assert ret["old"] == MASTER and ret["new"] == REPLICA and ret["write_block_seconds"] < 10
    assert all(result["ok"] for result in ret["highstate"].values()), ret["highstate"]
    # every row written before is on both; the new primary takes the application's writes, the old one follows
    assert count(lab, REPLICA) == rows["n"]
    assert_primary(lab, REPLICA, MASTER)
    write(lab, rows, f"masterdb.{ZONE}")
    wait_rows(lab, MASTER, rows["n"])
    refused = app_sql(lab, f"{MASTER}.{ZONE}", "INSERT INTO e2e.switch (host) VALUES ('old')", check=False)
    assert refused.returncode != 0 and "read-only" in refused.stderr, refused
    assert_names_follow(lab, REPLICA)
    assert last_commit(lab) == f"db: switch masterdb from {MASTER} to {REPLICA}"
    assert is_masterdb(lab, REPLICA) and not is_masterdb(lab, MASTER)
    assert inventory(lab)["hosts"][MASTER]["roles"] == ["db"]  # the name cannot change: explicit roles


def switch_back(lab, rows):
    """db.switchover to db1-masterdb: it takes writes through the masterdb name, db2 replicates them."""
    code, ret = salt_run(lab, "db.switchover", MASTER)
    assert code == 0 and not ret["problems"], ret
    assert_primary(lab, MASTER, REPLICA)
    write(lab, rows, f"masterdb.{ZONE}")
    wait_rows(lab, REPLICA, rows["n"])
    assert_names_follow(lab, MASTER)


def test_switchover_back_by_runner(lab, rows):
    switch_back(lab, rows)
    assert last_commit(lab) == f"db: switch masterdb from {REPLICA} to {MASTER}"


def test_switchover_by_pillar_commit_and_orchestrate(lab, rows):
    path = lab.pillar_repo / "inventory.yaml"
    path.write_text(dbplan.move_masterdb(path.read_text(), MASTER, REPLICA))
    git(lab, "commit", "-qam", "move masterdb to db2")
    code, ret = salt_run(lab, "state.orchestrate", "orch.db_switchover")
    assert code == 0, ret
    states = ret["data"][next(iter(ret["data"]))]
    assert all(state["result"] for state in states.values()), states
    switched = next(state for state in states.values() if state["__id__"] == "db-switchover")
    assert switched["changes"]["return"]["new"] == REPLICA, switched
    assert_primary(lab, REPLICA, MASTER)
    assert_names_follow(lab, REPLICA)
    assert last_commit(lab) == "move masterdb to db2"  # the runner committed nothing itself
    write(lab, rows, f"masterdb.{ZONE}")
    wait_rows(lab, MASTER, rows["n"])
    # and back, for the next tests
    code, ret = salt_run(lab, "db.switchover", MASTER)
    assert code == 0 and not ret["problems"], ret
    assert_primary(lab, MASTER, REPLICA)
    wait_rows(lab, REPLICA, rows["n"])


def test_switchover_to_a_replica_that_does_not_replicate_is_refused(lab, rows):
    head = last_commit(lab)
    lab.salt(REPLICA, "mariadb_replication.stop_replica")
    try:
        code, ret = salt_run(lab, "db.switchover", REPLICA)
        assert code != 0, ret
        assert f"switchover to {REPLICA} refused: {REPLICA} is not replicating from {MASTER}" in str(ret), ret
        # nothing moved: the primary still takes writes, the inventory is as it was
        master = status(lab, MASTER)
        assert master["role"] == "primary" and not master["read_only"]
        assert last_commit(lab) == head
        write(lab, rows, f"masterdb.{ZONE}")
    finally:
        lab.salt(REPLICA, "mariadb_replication.start_replica", "timeout=30")
    wait_rows(lab, REPLICA, rows["n"])


def test_failover_when_the_primary_mariadb_is_killed(lab, rows):
    write(lab, rows, f"masterdb.{ZONE}")
    wait_rows(lab, REPLICA, rows["n"])
    lab.sh(MASTER, "systemctl", "mask", "--runtime", "mariadb")
    first_write = {}

    def writer():
        # the application's view: write to db2 until it takes writes
        while "at" not in first_write and time.monotonic() < killed + 120:
            attempt = app_sql(lab, f"{REPLICA}.{ZONE}", "INSERT INTO e2e.switch (host) VALUES ('failover')",
                              check=False)  # fmt: skip
            if attempt.returncode == 0:
                first_write["at"] = time.monotonic()
            else:
                time.sleep(0.1)

    killed = time.monotonic()
    lab.sh(MASTER, "systemctl", "kill", "-s", "KILL", "mariadb", check=False)
    thread = threading.Thread(target=writer)
    thread.start()
    code, ret = salt_run(lab, "db.failover")
    thread.join()
    assert code == 0 and isinstance(ret, dict) and not ret["problems"], ret
    rows["n"] += 1
    print(
        json.dumps({"failover": {"runner_seconds": ret["seconds"], "kill_to_first_write": first_write["at"] - killed}})
    )
    assert ret["promoted"] == REPLICA and ret["old"] == MASTER and ret["candidates"] == [REPLICA]
    assert lab.sh(MASTER, "systemctl", "is-active", "mariadb", check=False).stdout.strip() != "active"
    assert count(lab, REPLICA) == rows["n"]
    new = status(lab, REPLICA)
    assert new["role"] == "primary" and not new["read_only"]
    assert last_commit(lab) == f"db: fail over masterdb from {MASTER} to {REPLICA}"
    assert is_masterdb(lab, REPLICA) and not is_masterdb(lab, MASTER)
    # every host but the dead one was highstated (that one is left alone until it is rejoined or rebuilt)
    assert_names_follow(lab, REPLICA, hosts=("app1", "salt", REPLICA))
    write(lab, rows, f"masterdb.{ZONE}")
    assert count(lab, REPLICA) == rows["n"]


def test_the_old_primary_does_not_come_back_as_primary(lab, rows):
    lab.sh(MASTER, "systemctl", "unmask", "--runtime", "mariadb")
    lab.sh(MASTER, "systemctl", "start", "mariadb")
    old = status(lab, MASTER)
    assert old["read_only"] and old["role"] == "standalone", old
    state = db_status(lab)
    assert state["primary"] == REPLICA
    assert any(problem.startswith(f"{MASTER}: replicates from nobody") for problem in state["problems"])


def test_the_old_primary_rebuilt_as_a_replica(lab, rows):
    proc = lab_cli("replace", MASTER, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:]
    lab.refresh()
    wait_rows(lab, MASTER, rows["n"])
    assert_primary(lab, REPLICA, MASTER)
    # hand the lab back as it was: db1-masterdb the primary
    switch_back(lab, rows)
