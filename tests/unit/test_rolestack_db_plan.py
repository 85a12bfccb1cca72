"""
The db runner's decisions (``_utils/rolestack_db_plan.py``), on the example inventory: the topology from the
pillar, the platform's state from each host's status, why a switchover is refused, which replica a failover
promotes (and when it refuses), the fencing command and timeout from the master configuration, and the inventory
edit that moves the masterdb role. The runner acting on them is tests/unit/test_db_runner.py.
"""

import copy

import pytest
import rolestack_db_plan as dbplan
import rolestack_inventory as logic
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

from tests.support.db_example import DB1
from tests.support.db_example import DB2
from tests.support.db_example import DB3
from tests.support.db_example import EXAMPLE
from tests.support.db_example import S1
from tests.support.db_example import S2
from tests.support.db_example import S3
from tests.support.db_example import ZONE
from tests.support.db_example import pillar_of
from tests.support.db_example import three_db_inventory


def topology(text=EXAMPLE, accepted=None):
    hosts = [name for name in logic.load_yaml(text)["hosts"]]
    return dbplan.topology_from_pillar(pillar_of(DB2, text), hosts if accepted is None else accepted)


def status(role="replica", read_only=True, source=DB1, io="Yes", sql="Yes", lag=0, current="", binlog="", slave="",
           io_pos="", io_error="", sql_error=""):  # fmt: skip
    """A mariadb_replication.status return, the keys the runner reads."""
    replica = role == "replica"
    return {
        "role": role,
        "read_only": read_only,
        "Master_Host": f"{source}.{ZONE}" if replica else None,
        "Slave_IO_Running": io if replica else None,
        "Slave_SQL_Running": sql if replica else None,
        "Seconds_Behind_Master": lag if replica else None,
        "Last_IO_Error": io_error,
        "Last_SQL_Error": sql_error,
        "gtid_current_pos": current,
        "gtid_slave_pos": slave,
        "gtid_binlog_pos": binlog,
        "Gtid_IO_Pos": io_pos,
        "server_id": 1,
    }


def primary_status(pos=f"0-{S1}-100"):
    return status(role="primary", read_only=False, current=pos, binlog=pos)


def summary(results, text=EXAMPLE, max_lag=30):
    topo = topology(text)
    return topo, dbplan.summarize(topo, results, max_lag)


# ---- topology and state --------------------------------------------------------------------------


def test_topology_from_the_db_pillar_maps_minion_ids():
    topo = topology(accepted=[DB1, f"db2.{ZONE}", "salt"])
    assert list(topo["hosts"]) == [DB1, DB2]
    assert topo["hosts"][DB1]["minion"] == DB1
    # one minion id per host, its inventory name: a key accepted under the FQDN is not db2's
    assert topo["hosts"][DB2]["minion"] == DB2
    assert topo["ca"] == "salt"
    assert topo["hosts"][DB2]["fqdn"] == f"db2.{ZONE}"
    assert topo["masterdb"] == DB1
    assert topo["settings"]["switchover_max_lag_seconds"] == 5
    assert topo["password"] == "example-replication-0123456789"


def test_topology_needs_the_replication_secret():
    rolestack = copy.deepcopy(pillar_of(DB2))
    rolestack["secrets"].pop("replication_password")
    with pytest.raises(CommandExecutionError, match="replication_password"):
        dbplan.topology_from_pillar(rolestack, [DB1, DB2])


@pytest.mark.parametrize("given", [DB2, f"db2.{ZONE}", "10.10.10.12", f"db2.{ZONE}."])
def test_host_name_from_name_fqdn_or_address(given):
    assert dbplan.host_name(given, topology()) == DB2


def test_host_name_of_the_masterdb_alias_and_of_strangers():
    assert dbplan.host_name(f"masterdb.{ZONE}", topology()) == DB1
    assert dbplan.host_name("app1", topology()) is None


def test_summary_of_a_healthy_pair():
    _, state = summary({DB1: {"status": primary_status()}, DB2: {"status": status(current=f"0-{S1}-100")}})
    assert state["ok"] and state["primary"] == DB1 and state["masterdb"] == DB1
    assert state["hosts"][DB2]["source"] == DB1 and state["hosts"][DB2]["replicating"]


def test_summary_reports_broken_lagging_and_unreachable_replicas():
    text = three_db_inventory()
    _, state = summary(
        {
            DB1: {"status": primary_status()},
            DB2: {"status": status(sql="No", sql_error="Duplicate entry '1' for key 'PRIMARY'")},
            DB3: {"error": "the minion did not answer"},
        },
        text,
    )
    assert not state["ok"]
    assert any(
        "db2: replication from db1-masterdb is broken" in p and "Duplicate entry" in p for p in state["problems"]
    )
    assert any(p.startswith("db3: unreachable") for p in state["problems"])
    _, state = summary({DB1: {"status": primary_status()}, DB2: {"status": status(lag=45)}}, max_lag=30)
    assert state["problems"] == ["db2: 45 s behind db1-masterdb (more than 30 s)"]


def test_summary_reports_the_inventory_naming_another_primary():
    _, state = summary({DB1: {"status": status(source=DB2)}, DB2: {"status": primary_status()}})
    assert state["primary"] == DB2
    assert any(
        "the inventory names db1-masterdb masterdb but the running primary is db2" in p for p in state["problems"]
    )


def test_summary_without_or_with_two_primaries():
    _, state = summary({DB1: {"error": "cannot connect to MariaDB"}, DB2: {"status": status()}})
    assert state["primary"] is None and "salt-run db.failover" in state["problems"][0]
    _, state = summary({DB1: {"status": primary_status()}, DB2: {"status": primary_status()}})
    assert state["primary"] is None and state["primaries"] == [DB1, DB2]
    assert "several primaries" in state["problems"][0]


# ---- switchover refusals -------------------------------------------------------------------------


def refusal(new, results, text=EXAMPLE, max_lag=5, binlog_state=None):
    topo, state = summary(results, text)
    if binlog_state is None and state["primary"]:
        binlog_state = state["hosts"][state["primary"]]["gtid_binlog_pos"]
    return dbplan.switchover_refusal(new, topo, state, max_lag, binlog_state)


def test_a_switchover_to_a_caught_up_replica_may_run():
    pos = f"0-{S1}-100"
    assert refusal(DB2, {DB1: {"status": primary_status(pos)}, DB2: {"status": status(current=pos)}}) is None
    # behind by a little (within max_lag) is fine: the write block waits for it
    assert (
        refusal(DB2, {DB1: {"status": primary_status(pos)}, DB2: {"status": status(lag=3, current=f"0-{S1}-98")}})
        is None
    )


@pytest.mark.parametrize(
    ("new", "results", "reason"),
    [
        ("app1", {DB1: {"status": primary_status()}, DB2: {"status": status()}}, "app1 is not a db host"),
        (DB1, {DB1: {"status": primary_status()}, DB2: {"status": status()}}, "db1-masterdb is the primary already"),
        (DB2, {DB1: {"error": "down"}, DB2: {"status": status()}}, "there is no running primary"),
        (DB2, {DB1: {"status": primary_status()}, DB2: {"error": "the minion did not answer"}}, "db2 does not answer"),
        (DB2, {DB1: {"status": primary_status()}, DB2: {"status": status(io="No", sql="No")}}, "db2 is not replicating from db1-masterdb"),
        (DB2, {DB1: {"status": primary_status()}, DB2: {"status": status(io="Connecting")}}, "IO thread Connecting"),
        (DB2, {DB1: {"status": primary_status()}, DB2: {"status": status(lag=6)}}, "db2 is 6 s behind db1-masterdb, more than max_lag=5"),
        (DB2, {DB1: {"status": primary_status()}, DB2: {"status": status(role="standalone", read_only=True)}}, "replicates from nobody"),
        (
            DB2,
            {DB1: {"status": primary_status(f"0-{S1}-100")}, DB2: {"status": status(current=f"0-{S2}-101")}},
            "db2 has transactions the primary db1-masterdb does not have",
        ),
        (
            DB2,
            {DB1: {"status": primary_status(f"0-{S1}-100")}, DB2: {"status": status(current=f"0-{S2}-100")}},
            "does not have",
        ),
    ],
)  # fmt: skip
def test_switchover_refusals(new, results, reason):
    assert reason in refusal(new, results)


def test_a_replica_read_after_the_primary_may_be_ahead_of_that_read():
    # under writes: db2's position is read after db1's status; db1's binlog state, read last, has them all
    results = {DB1: {"status": primary_status(f"0-{S1}-279")}, DB2: {"status": status(current=f"0-{S1}-284")}}
    assert refusal(DB2, results, binlog_state=f"0-{S1}-290") is None
    # the same positions without the later read: refused, naming what the primary lacks
    assert "(0-" + f"{S1}-284; db2 at" in refusal(DB2, results, binlog_state=f"0-{S1}-279")


def test_switchover_refuses_a_replica_of_another_source():
    text = three_db_inventory()
    results = {DB1: {"status": primary_status()}, DB2: {"status": status()}, DB3: {"status": status(source=DB2)}}
    assert refusal(DB3, results, text) == "db3 replicates from db2, not from the primary db1-masterdb"


# ---- failover decisions --------------------------------------------------------------------------


def plan(results, text=EXAMPLE):
    topo, state = summary(results, text)
    return dbplan.failover_plan(topo, state)


def test_failover_plan_finds_the_dead_primary_and_the_candidates():
    text = three_db_inventory()
    connecting = status(io="Connecting", io_error="error reconnecting to master")
    found = plan(
        {DB1: {"error": "cannot connect to MariaDB"}, DB2: {"status": connecting}, DB3: {"status": connecting}}, text
    )
    assert found == {"old": DB1, "candidates": [DB2, DB3], "excluded": {}}
    found = plan(
        {DB1: {"error": "did not answer"}, DB2: {"status": connecting}, DB3: {"error": "did not answer"}}, text
    )
    assert found["candidates"] == [DB2] and "unreachable" in found["excluded"][DB3]


@pytest.mark.parametrize(
    ("results", "reason"),
    [
        ({DB1: {"status": primary_status()}, DB2: {"status": status()}}, "nothing to fail over"),
        ({DB1: {"status": status(role="standalone")}, DB2: {"status": status(io="Connecting")}}, "it is not dead"),
        ({DB1: {"error": "did not answer"}, DB2: {"status": status(io="Yes")}}, "still receives db1-masterdb's binary log"),
        ({DB1: {"error": "did not answer"}, DB2: {"error": "did not answer"}}, "no replica of db1-masterdb answers"),
    ],
)  # fmt: skip
def test_failover_refusals(results, reason):
    with pytest.raises(CommandExecutionError, match=reason):
        plan(results)


def test_failover_refuses_replicas_of_different_sources():
    text = three_db_inventory()
    results = {DB1: {"error": "down"}, DB2: {"status": status(io="No")}, DB3: {"status": status(source=DB2, io="No")}}
    with pytest.raises(CommandExecutionError, match="different sources"):
        plan(results, text)


def positions(**applied):
    return {host: {"applied": pos, "received": pos, "sql_running": True} for host, pos in applied.items()}


def test_the_most_advanced_replica_is_promoted():
    assert dbplan.choose_promotion(positions(db2=f"0-{S1}-98", db3=f"0-{S1}-100", db4=f"0-{S1}-99")) == "db3"
    # equal: the first in inventory order
    assert dbplan.choose_promotion(positions(db2=f"0-{S1}-100", db3=f"0-{S1}-100")) == "db2"
    # several domains: the one holding every domain's latest
    assert dbplan.choose_promotion(positions(db2=f"0-{S1}-100,1-{S2}-7", db3=f"0-{S1}-100,1-{S2}-5")) == "db2"


def test_never_promote_a_replica_behind_another():
    found = positions(db2=f"0-{S1}-100", db3=f"0-{S1}-97")
    assert dbplan.choose_promotion(found) == "db2"
    # db3 received more than anyone applied (its SQL thread stopped): refuse rather than lose 98-101
    found["db3"]["received"] = f"0-{S1}-101"
    found["db3"]["sql_running"] = False
    with pytest.raises(CommandExecutionError, match=r"db3 received transactions up to 0-168430091-101 that db2"):
        dbplan.choose_promotion(found)


def test_diverged_replicas_are_not_promoted():
    with pytest.raises(CommandExecutionError, match="positions diverged"):
        dbplan.choose_promotion(positions(db2=f"0-{S1}-100,1-{S2}-5", db3=f"0-{S1}-99,1-{S2}-6"))
    with pytest.raises(CommandExecutionError, match="positions diverged"):
        dbplan.choose_promotion(positions(db2=f"0-{S2}-100", db3=f"0-{S3}-100"))


# ---- fencing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["poweroff {host}", [], ["fence", "{nohost}"], ["fence", 3]])
def test_a_malformed_fence_command_is_refused_naming_the_key(command):
    with pytest.raises(CommandExecutionError, match="rolestack_db_fence_command in the master configuration"):
        dbplan.fence_command({"rolestack_db_fence_command": command}, topology(), DB1)


@pytest.mark.parametrize("timeout", ["60", 0, True, None])
def test_a_malformed_fence_timeout_is_refused_naming_the_key(timeout):
    with pytest.raises(CommandExecutionError, match="rolestack_db_fence_timeout in the master configuration"):
        dbplan.fence_timeout({"rolestack_db_fence_timeout": timeout})
    assert dbplan.fence_timeout({}) == 60


def test_fence_command_placeholders():
    command = ["fence", "{host}", "--fqdn={fqdn}", "{address}", "{minion}"]
    assert dbplan.fence_command({"rolestack_db_fence_command": command}, topology(), DB2) == [
        "fence", DB2, f"--fqdn=db2.{ZONE}", "10.10.10.12", DB2,
    ]  # fmt: skip
    assert dbplan.fence_command({}, topology(), DB2) is None


# ---- the runner's arguments ----------------------------------------------------------------------


def test_lag_limit_given_or_from_the_inventory():
    topo = topology()
    assert dbplan.lag_limit(topo, None, "switchover_max_lag_seconds") == 5
    assert dbplan.lag_limit(topo, None, "max_lag_seconds") == 30
    topo["settings"]["max_lag_seconds"] = 12
    assert dbplan.lag_limit(topo, None, "max_lag_seconds") == 12
    assert dbplan.lag_limit(topo, 0, "max_lag_seconds") == 0
    assert dbplan.lag_limit(topo, 2.5, "max_lag_seconds") == 2.5


@pytest.mark.parametrize("given", [-1, "5", True])
def test_a_malformed_lag_limit_is_refused(given):
    with pytest.raises(SaltInvocationError, match="max_lag: expected a number of seconds >= 0"):
        dbplan.lag_limit(topology(), given, "max_lag_seconds")


@pytest.mark.parametrize("timeout", [0, -3, "30", False, None])
def test_a_timeout_is_a_positive_number_of_seconds(timeout):
    with pytest.raises(SaltInvocationError, match="timeout: expected a number of seconds > 0"):
        dbplan.check_timeout(timeout)
    dbplan.check_timeout(0.5)


# ---- the inventory edit --------------------------------------------------------------------------


def diff(old, new):
    """The changed lines as (removed, added)."""
    before, after = old.splitlines(), new.splitlines()
    return [line for line in before if line not in after], [line for line in after if line not in before]


def test_moving_masterdb_off_a_masterdb_named_host_gives_both_explicit_roles():
    edited = dbplan.move_masterdb(EXAMPLE, DB1, DB2)
    assert diff(EXAMPLE, edited) == ([], ["    roles: [db]", "    roles: [db, masterdb]"])
    # the lines land inside each host's block, comments kept
    assert "  db1-masterdb:              # -> db, masterdb\n    roles: [db]\n    address: 10.10.10.11\n" in edited
    assert "  db2:\n    roles: [db, masterdb]\n    address: 10.10.10.12\n" in edited
    hosts = logic.load_yaml(edited)["hosts"]
    assert hosts[DB1]["roles"] == ["db"] and hosts[DB2]["roles"] == ["db", "masterdb"]
    assert logic.validate(logic.load_yaml(edited)) == []
    # and back: the explicit lists are edited in place
    back = dbplan.move_masterdb(edited, DB2, DB1)
    assert back == EXAMPLE.replace(
        "\n    address: 10.10.10.11\n", "\n    roles: [db, masterdb]\n    address: 10.10.10.11\n"
    ).replace("  db2:\n", "  db2:\n    roles: [db]\n")
    derived = logic.derive(logic.load_yaml(back))
    assert derived["hosts"][DB1]["db"]["is_master"] and not derived["hosts"][DB2]["db"]["is_master"]


def test_block_lists_flow_mappings_and_empty_hosts():
    text = (
        "level: production\ndomain: wpdn\nnetwork: 10.10.10.0/24\nhosts:\n"
        "  salt: {address: 10.10.10.2}\n"
        "  db4:\n    roles:\n      - db\n      - masterdb   # the primary\n    address: 10.10.10.11\n"
        "  db5: {address: 10.10.10.12}\n"
        "  db6:\n"
        "secrets:\n  replication_password: example-replication-0123456789\n"
        "  db_admin_password: example-db-admin-0123456789\n"
    )
    edited = dbplan.move_masterdb(text, "db4", "db5")
    assert "  db4:\n    roles:\n      - db\n    address: 10.10.10.11\n" in edited
    assert "  db5: {address: 10.10.10.12, roles: [db, masterdb]}\n" in edited
    edited = dbplan.move_masterdb(edited, "db5", "db6")
    assert "  db6: {roles: [db, masterdb]}\n" in edited
    assert "  db5: {address: 10.10.10.12, roles: [db]}\n" in edited


def test_inventory_under_rolestack_inventory():
    nested = "rolestack:\n  inventory:\n" + "".join(f"    {line}\n" if line else "\n" for line in EXAMPLE.splitlines())
    edited = dbplan.move_masterdb(nested, DB1, DB2)
    assert logic.load_yaml(edited)["hosts"][DB2]["roles"] == ["db", "masterdb"]
    assert "      db2:\n        roles: [db, masterdb]\n" in edited


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (DB2, DB1, "does not give db2 the masterdb role"),
        (DB1, "app1", "app1 has no db role"),
        (DB1, "db9", "db9 is not in the inventory"),
    ],
)
def test_inventory_edit_refusals(old, new, message):
    with pytest.raises(CommandExecutionError, match=message):
        dbplan.move_masterdb(EXAMPLE, old, new)


def test_git_source_from_the_master_config():
    opts = {"ext_pillar": [{"git": "main file:///x"}, {"rolestack": {"git": {"repo": "/srv/p", "path": "inv.yaml"}}}]}
    assert dbplan.git_source(opts) == {"repo": "/srv/p", "ref": "main", "path": "inv.yaml"}
    assert dbplan.git_source({"ext_pillar": [{"rolestack": {"inventory": "inventory.yaml"}}]}) is None
    assert dbplan.git_source({}) is None
