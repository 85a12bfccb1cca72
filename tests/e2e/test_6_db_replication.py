"""db/masterdb roles in the lab: replication over verified TLS after the first highstate, refusals, replace."""

import json
import time

import pytest
import yaml
from rolestack_highstate import wait_for

from tests.e2e.conftest import changed_states
from tests.e2e.conftest import failures
from tests.e2e.conftest import lab_cli

MASTER, REPLICA = "db1-masterdb", "db2"
ZONE = "production.wpdn"


def status(lab, host):
    return lab.salt(host, "mariadb_replication.status")[host]


def sql(lab, host, statement, *options, check=True):
    return lab.sh(host, "mariadb", "--batch", "--skip-column-names", *options, "-e", statement, check=check)


def secret(lab, name):
    return yaml.safe_load((lab.pillar_repo / "inventory.yaml").read_text())["secrets"][name]


def wait_rows(lab, host, expected, timeout=60):
    seen = []

    def arrived():
        proc = sql(lab, host, "SELECT COUNT(*) FROM e2e.rows", check=False)
        seen.append(proc.stdout.strip() or proc.stderr.strip())
        return proc.returncode == 0 and proc.stdout.strip() == str(expected)

    wait_for(arrived, timeout, lambda: f"{expected} rows on {host} (it has {seen[-1]})")


@pytest.fixture(scope="module")
def rows(lab):
    sql(lab, MASTER, "CREATE DATABASE IF NOT EXISTS e2e; CREATE TABLE IF NOT EXISTS e2e.rows (id INT PRIMARY KEY)")
    sql(lab, MASTER, "INSERT INTO e2e.rows VALUES " + ",".join(f"({i})" for i in range(1, 501)))
    return 500


def test_replica_replicates_over_verified_tls(lab):
    replica = status(lab, REPLICA)
    assert replica["Slave_IO_Running"] == "Yes" and replica["Slave_SQL_Running"] == "Yes", replica
    assert replica["Master_Host"] == f"{MASTER}.{ZONE}"
    assert replica["Master_SSL_Allowed"] == "Yes" and replica["Master_SSL_Verify_Server_Cert"] == "Yes"
    assert replica["Using_Gtid"] == "Slave_Pos"
    assert replica["read_only"] and replica["role"] == "replica"
    master = status(lab, MASTER)
    assert not master["read_only"] and master["role"] == "primary"
    assert master["rpl_semi_sync_master_wait_point"] == "AFTER_SYNC"
    assert int(master["Rpl_semi_sync_master_clients"]) >= 1
    # the server id comes from the inventory (the address), nothing kept by hand
    assert master["server_id"] != replica["server_id"]


def test_rows_written_on_masterdb_reach_the_replica(lab, rows):
    wait_rows(lab, REPLICA, rows)


def test_replication_account_refuses_plain_text_and_other_hosts(lab):
    password = secret(lab, "replication_password")
    # from the replica's own address, without TLS: refused (REQUIRE X509)
    plain = lab.sh(REPLICA, "mariadb", "-h", f"{MASTER}.{ZONE}", "-u", "repl", f"-p{password}", "--skip-ssl",
                   "-e", "SELECT 1", check=False)  # fmt: skip
    assert plain.returncode != 0 and "Access denied" in plain.stderr, plain
    # from a host that is not a db host: no account there at all
    other = lab.sh("app1", "mariadb", "-h", f"{MASTER}.{ZONE}", "-u", "repl", f"-p{password}", "-e", "SELECT 1",
                   check=False)  # fmt: skip
    assert other.returncode != 0


def test_the_replica_refuses_application_writes(lab, rows):
    sql(lab, MASTER, "CREATE USER IF NOT EXISTS 'e2eapp'@'%' IDENTIFIED BY 'e2e-app-password-0123'; "
                     "GRANT ALL ON e2e.* TO 'e2eapp'@'%'")  # fmt: skip
    time.sleep(1)
    write = lab.sh("app1", "mariadb", "-h", f"{REPLICA}.{ZONE}", "-u", "e2eapp", "-pe2e-app-password-0123",
                   "-e", "INSERT INTO e2e.rows VALUES (100000)", check=False)  # fmt: skip
    assert write.returncode != 0 and "read-only" in write.stderr, write


def test_second_highstate_of_db_hosts_changes_nothing(lab):
    for host in (MASTER, REPLICA):
        result = lab.highstate(host)
        changed = changed_states(result)[host]
        assert result["clean"] and not changed, (host, changed, failures(result))


def test_replaced_replica_comes_back_replicating_with_all_rows(lab, rows):
    proc = lab_cli("replace", REPLICA, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:]
    lab.refresh()
    wait_rows(lab, REPLICA, rows)
    replica = status(lab, REPLICA)
    assert replica["Slave_IO_Running"] == "Yes" and replica["Master_SSL_Verify_Server_Cert"] == "Yes"
    sql(lab, MASTER, "INSERT INTO e2e.rows VALUES (501)")
    wait_rows(lab, REPLICA, rows + 1)
    print(json.dumps({"replace_output_tail": proc.stdout[-600:]}))
