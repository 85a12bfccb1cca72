"""
The db runner in a real master, synced from the repository with its util (``_utils/rolestack_db_plan.py``): it
loads, reads the db hosts from the master's own pillar, and with db1-masterdb absent (no such minion here) reports
it unreachable and refuses a switchover before changing anything.
"""

PUBLIC = ("status", "health", "switchover", "failover", "rejoin")


def test_the_db_runner_loads_with_its_util(salt_master):
    ret = salt_master.salt_run_cli().run("doc.runner")
    assert ret.returncode == 0 and isinstance(ret.data, dict), ret
    docs = {name: doc for name, doc in ret.data.items() if name.startswith("db.")}
    assert set(docs) == {f"db.{name}" for name in PUBLIC}, docs
    assert all("CLI Example" in doc for doc in docs.values()), docs


def test_status_and_a_refused_switchover_without_the_primary(salt_master, minions):
    cli = salt_master.salt_run_cli(timeout=120)
    ret = cli.run("db.status")
    assert ret.returncode == 0 and isinstance(ret.data, dict), ret
    assert ret.data["masterdb"] == "db1-masterdb" and list(ret.data["hosts"]) == ["db1-masterdb", "db2"], ret.data
    assert ret.data["hosts"]["db1-masterdb"] == {
        "reachable": False,
        "error": "the minion did not answer",
        "masterdb": True,
    }
    assert "db1-masterdb: unreachable: the minion did not answer" in ret.data["problems"] and not ret.data["ok"]
    ret = cli.run("db.switchover", "db2")
    assert ret.returncode != 0, ret
    assert "switchover to db2 refused" in ret.stdout + ret.stderr, ret
