"""
The db module and a db state through the master, the publish path the db runner uses
(`salt db2 mariadb_replication.*`), against a private MariaDB that the minion reaches by its socket.
"""

import pytest


@pytest.fixture
def server(private_mariadb):
    """The private server's socket as the module's connection options; read_only OFF again afterwards."""
    options = {"connection_unix_socket": str(private_mariadb.socket)}
    yield options
    private_mariadb.sql("SET GLOBAL read_only = 0")


def test_status_and_read_only_through_the_master(salt_master, minions, server):
    cli = salt_master.salt_cli(timeout=60)
    status = cli.run("mariadb_replication.status", minion_tgt="db2", **server)
    assert status.returncode == 0, status
    assert status.data["read_only"] is False and status.data["role"] == "primary", status.data

    changed = cli.run("mariadb_replication.set_read_only", enabled=True, minion_tgt="db2", **server)
    assert changed.data == {"read_only": True, "changed": True}, changed
    assert cli.run("mariadb_replication.status", minion_tgt="db2", **server).data["role"] == "standalone"


def test_state_through_the_master_dry_run_apply_then_nothing(salt_master, minions, server):
    cli = salt_master.salt_cli(timeout=60)

    def apply(**extra):
        ret = cli.run("state.single", "mariadb_replication.read_only", name="replica", enabled=True,
                      minion_tgt="db2", **server, **extra)  # fmt: skip
        assert ret.returncode in (0, 1), ret
        (state,) = ret.data.values()
        return state

    dry = apply(test=True)
    assert dry["result"] is None and dry["changes"] and "would" in dry["comment"], dry
    assert cli.run("mariadb_replication.status", minion_tgt="db2", **server).data["read_only"] is False
    first = apply()
    assert first["result"] is True and first["changes"], first
    second = apply()
    assert second["result"] is True and second["changes"] == {}, second


def test_module_errors_reach_the_caller_without_a_traceback(salt_master, minions, tmp_path):
    cli = salt_master.salt_cli(timeout=60)
    ret = cli.run("mariadb_replication.status", connection_unix_socket=str(tmp_path / "missing.sock"),
                  minion_tgt="db2")  # fmt: skip
    text = str(ret.data) + ret.stdout
    assert "cannot connect" in text.lower() or "can't connect" in text.lower(), text
    assert "Traceback" not in text
