"""
An old primary coming back after a failover, with real private mariadbd instances and the replica state
``mariadb_replication.replica_configured`` through salt's ``state.single`` (as the db role runs it):

- forked: the old primary wrote a transaction the promoted replica never received. The state (also with
  test=True) refuses, names the host, the errant GTID, the source and the rebuild, and changes nothing: no
  CHANGE MASTER, no replica thread, ``gtid_slave_pos`` as it was. Pointed at the new primary by hand anyway,
  MariaDB stops with error 1236; the state then still refuses with the same fix.
- not forked: the new primary holds every transaction of the old one. The state points the old primary at it
  from its own binary log position, it replicates what the new primary wrote, and a second run changes nothing.

A module of its own (not test_mariadb_replication.py, which runs in a separate session: see
docs/development.md); its servers, PKI and loaders are its own (tests/functional/conftest.py, per module).
"""

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.mariadb import source_args
from tests.support.services import wait_for

REPL_PASSWORD = "repl-divergence-'pw'"
MINION = "db-old-primary"


def _source(instance, pki):
    return source_args(instance, pki, REPL_PASSWORD)


def _apply(module_loaders, new_primary, old_primary, pki, test=False):
    """The db role's replica state on the old primary, pointing at the new one (as in states/db/replication.sls)."""
    return module_loaders.states.mariadb_replication.replica_configured(
        name="127.0.0.1",
        master_port=new_primary.port,
        master_user="repl",
        master_password=REPL_PASSWORD,
        ssl_ca=pki["good_ca"],
        ssl_cert=pki["client_cert"],
        ssl_key=pki["client_key"],
        source_minion="new-primary",
        replica_address="127.0.0.1",
        test=test,
        **old_primary.args,
    )


def _failed_over(module_loaders, pki, instances, first_id):
    """
    A primary and its replica with replicated rows, then a failover: the replica promoted (replication reset,
    read_only OFF) and the old primary read-only with no source, as MariaDB starts it after a crash.
    """
    mdb = module_loaders.modules.mariadb_replication
    old, new = instances(first_id), instances(first_id + 1, read_only=True)
    mdb.replication_user_present("repl", REPL_PASSWORD, require="X509", **old.args)
    old.sql("CREATE DATABASE app")
    old.sql("CREATE TABLE app.items (id INT PRIMARY KEY, host VARCHAR(40))")
    old.sql("INSERT INTO app.items VALUES (1, 'old primary'), (2, 'old primary')")
    mdb.configure_replica(**_source(old, pki), **new.args)
    mdb.start_replica(timeout=30, **new.args)
    mdb.set_read_only(True, **old.args)
    position = mdb.status(**old.args)["gtid_binlog_pos"]
    # what db.switchover runs on the new primary: one call waits for the position, forgets the source and
    # takes writes; a position it cannot reach changes nothing
    with pytest.raises(CommandExecutionError, match=r"timed out after 1s waiting for GTID position 0-1-999999"):
        mdb.promote("0-1-999999", timeout=1, **new.args)
    assert mdb.status(**new.args)["read_only"] is True and mdb.replica_settings(**new.args)
    promoted = mdb.promote(position, timeout=30, **new.args)
    assert promoted["applied"] == position and promoted["read_only"] is False
    assert promoted["gtid_current_pos"] == position
    assert mdb.replica_settings(**new.args) is None and mdb.status(**new.args)["role"] == "primary"
    new.sql("INSERT INTO app.items VALUES (3, 'new primary')")
    return mdb, old, new


def _untouched(mdb, old, before):
    status = mdb.status(**old.args)
    assert mdb.replica_settings(**old.args) == before["settings"]
    assert status["Slave_IO_Running"] == before["io"] and status["Slave_SQL_Running"] == before["sql"]
    assert status["gtid_slave_pos"] == before["slave_pos"]
    assert status["gtid_binlog_pos"] == before["binlog_pos"]


def _snapshot(mdb, old):
    status = mdb.status(**old.args)
    return {
        "settings": mdb.replica_settings(**old.args),
        "io": status["Slave_IO_Running"],
        "sql": status["Slave_SQL_Running"],
        "slave_pos": status["gtid_slave_pos"],
        "binlog_pos": status["gtid_binlog_pos"],
    }


def test_a_forked_old_primary_is_refused_and_left_alone(module_loaders, pki, instances):
    mdb, old, new = _failed_over(module_loaders, pki, instances, 41)
    # written on the old primary (root passes read_only; sql_log_bin on) and never replicated: an errant GTID
    old.sql("INSERT INTO app.items VALUES (4, 'never replicated')")
    errant = mdb.status(**old.args)["gtid_binlog_pos"]
    assert errant.startswith("0-41-")
    assert mdb.gtid_missing(errant, new.sql("SELECT @@gtid_binlog_state")[0][0]) == [errant]
    before = _snapshot(mdb, old)
    assert before["settings"] is None and before["io"] is None

    for test in (True, False):
        ret = _apply(module_loaders, new, old, pki, test=test)
        assert ret.result is False, ret
        assert ret.changes == {}, ret
        for part in (f"{MINION} holds transactions the source 127.0.0.1 never had: {errant}",
                     f"salt-run db.rejoin {MINION} refuses it too", f"make lab-replace HOST={MINION}",
                     "Nothing was changed"):  # fmt: skip
            assert part in ret.comment, (part, ret.comment)
        assert "Traceback" not in ret.comment
        _untouched(mdb, old, before)

    # pointed at the new primary anyway, from its own binary log position (what db.rejoin does once it found no
    # errant GTID): the new primary cannot serve that position and MariaDB stops the IO thread with error 1236
    mdb.configure_replica(**_source(new, pki), slave_pos_from_binlog=True, **old.args)
    wait_for(lambda: mdb.status(**old.args)["Last_IO_Errno"] == 1236, 30, "error 1236 on the forked old primary")
    assert mdb.lag(**old.args)["io_running"] is False
    before = _snapshot(mdb, old)
    ret = _apply(module_loaders, new, old, pki)
    assert ret.result is False and ret.changes == {}, ret
    assert errant in ret.comment and f"make lab-replace HOST={MINION}" in ret.comment, ret.comment
    _untouched(mdb, old, before)
    # and the new primary never received the errant row
    assert new.sql("SELECT COUNT(*) FROM app.items WHERE id = 4") == ((0,),)


def test_an_old_primary_that_lost_nothing_comes_back_replicating(module_loaders, pki, instances):
    mdb, old, new = _failed_over(module_loaders, pki, instances, 51)
    old_binlog = mdb.status(**old.args)["gtid_binlog_pos"]
    assert old_binlog.startswith("0-51-") and mdb.status(**old.args)["gtid_slave_pos"] == ""

    would = _apply(module_loaders, new, old, pki, test=True)
    assert would.result is None, would
    assert would.changes["gtid_slave_pos"] == {"old": "", "new": old_binlog}, would.changes
    assert mdb.replica_settings(**old.args) is None

    ret = _apply(module_loaders, new, old, pki)
    assert ret.result is True, ret
    assert ret.comment == "replicating from 127.0.0.1"
    assert ret.changes["master_host"] == {"old": None, "new": "127.0.0.1"}
    assert ret.changes["gtid_slave_pos"] == {"old": "", "new": old_binlog}
    new.sql("INSERT INTO app.items VALUES (5, 'new primary')")
    assert mdb.wait_for_gtid(mdb.status(**new.args)["gtid_binlog_pos"], timeout=30, **old.args)
    assert old.sql("SELECT id FROM app.items ORDER BY id") == ((1,), (2,), (3,), (5,))
    settings = mdb.replica_settings(**old.args)
    assert (settings["master_port"], settings["ssl_verify"], settings["use_gtid"]) == (new.port, True, "slave_pos")

    again = _apply(module_loaders, new, old, pki)
    assert again.result is True and again.changes == {}, again
    assert again.comment == "already replicating from 127.0.0.1"


def test_an_old_primary_is_not_called_forked_by_a_source_provisioned_by_mariabackup(module_loaders, pki, instances):
    """
    The new primary was provisioned by mariabackup and promoted before it logged a replicated event: it holds the
    old primary's GTIDs in its gtid_slave_pos only (its binary log state is empty). The old primary lost nothing.
    """
    mdb = module_loaders.modules.mariadb_replication
    old, new = instances(61), instances(62, read_only=True)
    mdb.replication_user_present("repl", REPL_PASSWORD, require="X509", **old.args)
    old.sql("CREATE DATABASE app")
    old.sql("CREATE TABLE app.items (id INT PRIMARY KEY, host VARCHAR(40))")
    old.sql("INSERT INTO app.items VALUES (1, 'old primary')")
    provisioned = mdb.provision_replica(
        **{key: value for key, value in _source(old, pki).items() if key != "connect_retry"},
        source_socket=str(old.server.socket),
        service=None,
        start_command=" ".join(new.server.command()),
        overwrite_fresh=True,
        **new.args,
    )
    new.adopted_pid = provisioned["pid"]
    mdb.set_read_only(True, **old.args)
    position = mdb.status(**old.args)["gtid_binlog_pos"]
    assert position.startswith("0-61-") and provisioned["gtid_slave_pos"] == position
    mdb.promote(position, timeout=30, **new.args)
    applied = mdb.status(**new.args)
    assert (applied["gtid_binlog_state"], applied["gtid_slave_pos"]) == ("", position), applied
    would = _apply(module_loaders, new, old, pki, test=True)
    assert would.result is None and "never had" not in would.comment, would
    assert would.changes["gtid_slave_pos"] == {"old": "", "new": position}, would.changes
    ret = _apply(module_loaders, new, old, pki)
    assert ret.result is True and ret.comment == "replicating from 127.0.0.1", ret
    new.sql("INSERT INTO app.items VALUES (2, 'new primary')")
    assert mdb.wait_for_gtid(mdb.status(**new.args)["gtid_binlog_pos"], timeout=30, **old.args)
    assert old.sql("SELECT id FROM app.items ORDER BY id") == ((1,), (2,))
    # what the state read: the source's slave position holds what its binary log never did
    source = mdb.source_binlog_state(**{k: v for k, v in _source(new, pki).items() if k != "connect_retry"})
    assert source["gtid_slave_pos"] == position and source["read_only"] is False
    assert mdb.gtid_missing(position, source["gtid_binlog_state"], source["gtid_slave_pos"]) == []


def test_a_primary_demoted_before_it_logged_anything_resumes_where_it_stands(module_loaders, pki, instances):
    """
    A replica restored by mariabackup, promoted and demoted again before it logged a transaction (a switchover
    undone, or interrupted and switched back): its binary log is empty, its gtid_slave_pos holds what it applied.
    Pointed back at the old primary from its binary log position (what db.switchover and db.rejoin do for an old
    primary) it must continue from there, not replay the source's whole binary log.
    """
    mdb = module_loaders.modules.mariadb_replication
    first, second = instances(63), instances(64, read_only=True)
    mdb.replication_user_present("repl", REPL_PASSWORD, require="X509", **first.args)
    first.sql("CREATE DATABASE app")
    first.sql("CREATE TABLE app.items (id INT PRIMARY KEY)")
    source = {key: value for key, value in _source(first, pki).items() if key != "connect_retry"}
    provisioned = mdb.provision_replica(**source, source_socket=str(first.server.socket), service=None,
                                        start_command=" ".join(second.server.command()), overwrite_fresh=True,
                                        **second.args)  # fmt: skip
    second.adopted_pid = provisioned["pid"]
    mdb.set_read_only(True, **first.args)
    position = mdb.status(**first.args)["gtid_binlog_pos"]
    mdb.promote(position, timeout=30, **second.args)
    # and back: the second server read-only again, pointed at the first from its own binary log, the first writable
    mdb.set_read_only(True, **second.args)
    assert mdb.status(**second.args)["gtid_binlog_pos"] == ""
    mdb.configure_replica(**_source(first, pki), slave_pos_from_binlog=True, **second.args)
    assert mdb.status(**second.args)["gtid_slave_pos"] == position
    mdb.set_read_only(False, **first.args)
    first.sql("INSERT INTO app.items VALUES (1)")
    assert mdb.wait_for_gtid(mdb.status(**first.args)["gtid_binlog_pos"], timeout=30, **second.args)
    assert second.sql("SELECT id FROM app.items") == ((1,),)
    assert mdb.lag(**second.args)["replicating"] is True
