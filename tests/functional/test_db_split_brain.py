"""
Never two writable primaries, with real private mariadbd instances and the db role's ``mariadb_replication.read_only``
state through salt's ``state.single`` (as states/db/replication.sls runs it, peers as ``rolestack:db:peers`` lists
them, reached over verified TLS as the replication account):

- a server that still replicates is never made writable; nor one while a peer takes writes; the state fails naming
  ``salt-run db.switchover`` / ``db.failover`` and changes nothing, with ``test=True`` too; a peer that does not
  answer does not count;
- the running primary is not made read-only by a highstate that no longer names it masterdb (no primary would be
  left), unless another peer takes writes (then it steps down);
- ``set_read_only`` gives up after its ``lock_wait_timeout``: a ``read_only=ON`` waiting for a table lock fails
  and never lands later.

A module of its own (its servers, PKI and loaders: tests/functional/conftest.py, per module).
"""

import threading
import time

import pymysql
import pytest
from salt.exceptions import CommandExecutionError

from tests.support.mariadb import source_args
from tests.support.services import free_port

REPL_PASSWORD = "repl-split-brain-'pw'"
MINION = "db-split-brain"
RUNNER = "salt-run db.switchover"


def _peer(instance, server_id):
    """An entry of rolestack:db:peers for a private server (its certificate names 127.0.0.1; its own port)."""
    return {"name": f"db{server_id}", "fqdn": "127.0.0.1", "server_id": server_id, "port": instance.port}


@pytest.fixture(scope="module")
def pair(module_loaders, pki, instances):
    """A primary (server id 71) with the replication account, and its replica (72) replicating over TLS."""
    mdb = module_loaders.modules.mariadb_replication
    primary, replica = instances(71), instances(72, read_only=True)
    mdb.replication_user_present("repl", REPL_PASSWORD, require="X509", **primary.args)
    primary.sql("CREATE DATABASE app")
    primary.sql("CREATE TABLE app.items (id INT PRIMARY KEY)")
    mdb.configure_replica(**source_args(primary, pki, REPL_PASSWORD), **replica.args)
    mdb.start_replica(timeout=30, **replica.args)
    assert mdb.wait_for_gtid(mdb.status(**primary.args)["gtid_binlog_pos"], timeout=30, **replica.args)
    peers = [_peer(primary, 71), _peer(replica, 72)]
    return mdb, primary, replica, peers


def _read_only_state(module_loaders, instance, pki, enabled, peers, test=False):
    """The db role's read_only state (states/db/replication.sls) on one server."""
    return module_loaders.states.mariadb_replication.read_only(
        name="masterdb" if not enabled else "replica",
        enabled=enabled,
        peers=peers,
        peer_password=REPL_PASSWORD,
        ssl_ca=pki["good_ca"],
        ssl_cert=pki["client_cert"],
        ssl_key=pki["client_key"],
        masterdb="db72",
        test=test,
        **instance.args,
    )


def _refused(ret, *parts):
    assert ret.result is False and ret.changes == {}, ret
    for part in (RUNNER, "salt-run db.failover", "Nothing was changed", *parts):
        assert part in ret.comment, (part, ret.comment)
    assert "Traceback" not in ret.comment


def test_a_replica_is_never_made_writable(module_loaders, pki, pair):
    mdb, _primary, replica, peers = pair
    for test in (True, False):
        ret = _read_only_state(module_loaders, replica, pki, False, peers, test=test)
        _refused(ret, f"{MINION} was not made writable: it replicates from 127.0.0.1")
        assert mdb.status(**replica.args)["read_only"] is True
        assert mdb.lag(**replica.args)["replicating"] is True


def test_never_writable_while_a_peer_takes_writes(module_loaders, pki, pair):
    mdb, primary, replica, peers = pair
    # the replica forgot its source (e.g. a runner interrupted between promote and the inventory commit elsewhere)
    mdb.reset_replica(**replica.args)
    for test in (True, False):
        ret = _read_only_state(module_loaders, replica, pki, False, peers, test=test)
        _refused(ret, f"{MINION} was not made writable: 127.0.0.1 takes writes")
        assert mdb.status(**replica.args)["read_only"] is True
    # the primary read-only, a peer that does not answer: the replica may now be made writable, at once
    mdb.set_read_only(True, **primary.args)
    silent = {"name": "db79", "fqdn": "127.0.0.1", "server_id": 79, "port": free_port()}
    started = time.monotonic()
    ret = _read_only_state(module_loaders, replica, pki, False, [*peers, silent])
    assert ret.result is True and ret.changes == {"read_only": {"old": True, "new": False}}, ret
    assert time.monotonic() - started < 10
    assert mdb.status(**replica.args)["read_only"] is False


def test_the_only_primary_is_not_demoted_by_a_highstate(module_loaders, pki, pair):
    mdb, primary, replica, peers = pair
    # after the previous test: the old replica (72) is the only writable server; the inventory calls it a replica
    assert mdb.status(**replica.args)["role"] == "primary" and mdb.status(**primary.args)["read_only"] is True
    for test in (True, False):
        ret = _read_only_state(module_loaders, replica, pki, True, peers, test=test)
        _refused(ret, f"{MINION} was not made read-only: it is the running primary", "salt-run db.switchover db72")
        assert mdb.status(**replica.args)["read_only"] is False
    # two writable primaries: the one the inventory no longer names steps down
    mdb.set_read_only(False, **primary.args)
    ret = _read_only_state(module_loaders, replica, pki, True, peers)
    assert ret.result is True and ret.changes == {"read_only": {"old": False, "new": True}}, ret
    assert mdb.status(**replica.args)["read_only"] is True


def test_read_only_on_gives_up_after_its_lock_wait_timeout(module_loaders, pair):
    mdb, primary, _replica, _peers = pair
    mdb.set_read_only(False, **primary.args)
    locker = pymysql.connect(unix_socket=str(primary.server.socket), user="root", autocommit=True)
    outcome = {}

    def switch():
        started = time.monotonic()
        try:
            outcome["result"] = mdb.set_read_only(True, **primary.args)
        except CommandExecutionError as err:
            outcome["error"] = err
        outcome["seconds"] = time.monotonic() - started

    try:
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLES app.items WRITE")
        thread = threading.Thread(target=switch, daemon=True)
        thread.start()
        thread.join(15)
        finished = not thread.is_alive()
    finally:
        locker.close()  # releases the lock: a read_only=ON still waiting would land now
    thread.join(30)
    assert finished, "set_read_only still waits for the table lock after 15 s"
    assert "1205" in str(outcome.get("error")), outcome
    assert outcome["seconds"] < 10, outcome
    time.sleep(1)
    assert mdb.status(**primary.args)["read_only"] is False


def test_fence_writes_makes_a_primary_read_only_even_under_a_table_lock(module_loaders, pair):
    """What db.failover runs on an old primary whose minion answers: read_only ON, its clients cut off."""
    mdb, primary, _replica, _peers = pair
    mdb.set_read_only(False, **primary.args)
    locker = pymysql.connect(unix_socket=str(primary.server.socket), user="root", autocommit=True)
    try:
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLES app.items WRITE")
            me = locker.thread_id()
        started = time.monotonic()
        fenced = mdb.fence_writes(**primary.args)
        assert time.monotonic() - started < 10
    finally:
        locker.close()
    assert fenced["fenced"] == "read_only" and me in [killed["id"] for killed in fenced["killed"]], fenced
    assert mdb.status(**primary.args)["read_only"] is True
