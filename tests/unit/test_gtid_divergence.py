"""
A db host holding transactions its source never had (a forked old primary): the shared GTID logic
(``_utils/rolestack_gtid.py``, the module's ``gtid_missing``) and the decisions of the replica state
``mariadb_replication.replica_configured`` over a stand-in execution module (loader dunders patched). The real
servers are in tests/functional/test_replica_divergence.py.
"""

import importlib.util

import pytest
import rolestack_gtid as gtid
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

from tests.support.paths import REPO

S1, S2 = 168430091, 168430092
SOURCE = "db2.production.wpdn"


def _load(kind):
    spec = importlib.util.spec_from_file_location(f"mariadb_replication_{kind}", REPO / kind / "mariadb_replication.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mod = _load("_modules")
states = _load("_states")


# ---- the shared logic ----------------------------------------------------------------------------


def test_parse_positions_and_binlog_states():
    assert gtid.parse("0-1-100,1-2-7") == [(0, 1, 100), (1, 2, 7)]
    assert gtid.parse(" ") == [] and gtid.parse(None) == []
    assert gtid.parse("0-1-10,0-2-12", binlog_state=True) == [(0, 1, 10), (0, 2, 12)]
    with pytest.raises(SaltInvocationError, match="domain 0 appears twice in GTID position"):
        gtid.parse("0-1-10,0-2-12")
    with pytest.raises(SaltInvocationError, match="domain 0 server 1 appears twice in GTID binlog state"):
        gtid.parse("0-1-10,0-1-12", binlog_state=True)


@pytest.mark.parametrize(
    ("position", "state", "missing"),
    [
        (f"0-{S1}-10", f"0-{S1}-10,0-{S2}-12", []),  # the old primary's last transaction reached the new one
        (f"0-{S2}-11", f"0-{S1}-10,0-{S2}-12", []),
        (f"0-{S1}-12", f"0-{S1}-10,0-{S2}-12", [f"0-{S1}-12"]),  # seq 12 exists there, from another server: a fork
        (f"0-{S1}-11", f"0-{S1}-10", [f"0-{S1}-11"]),  # written and never replicated
        (f"0-{S1}-10,1-{S1}-3", f"0-{S1}-10", [f"1-{S1}-3"]),  # a domain the source never saw
        ("", f"0-{S1}-10", []),
        (f"0-{S1}-1", "", [f"0-{S1}-1"]),
    ],
)
def test_missing_names_the_transactions_the_other_never_had(position, state, missing):
    assert gtid.missing(position, state) == missing
    assert mod.gtid_missing(position, state) == missing


def test_what_a_server_applied_includes_its_slave_position():
    # a replica restored by mariabackup: the copied GTIDs are in its gtid_slave_pos, its binary log is empty
    assert gtid.applied("", f"0-{S1}-10") == f"0-{S1}-10"
    assert gtid.applied(f"0-{S1}-8,0-{S2}-12", f"0-{S1}-10,1-{S1}-3") == f"0-{S1}-10,0-{S2}-12,1-{S1}-3"
    assert gtid.applied(f"0-{S1}-10", f"0-{S1}-7") == f"0-{S1}-10"
    assert mod.gtid_missing(f"0-{S1}-10", "", f"0-{S1}-10") == []
    assert mod.gtid_missing(f"0-{S1}-11", "", f"0-{S1}-10") == [f"0-{S1}-11"]
    assert mod.gtid_missing(f"0-{S1}-10", "") == [f"0-{S1}-10"]


@pytest.mark.parametrize(
    ("binlog", "slave", "resume"),
    [
        (f"0-{S1}-12", f"0-{S2}-9", f"0-{S1}-12"),  # an old primary: after its own last transaction
        ("", f"0-{S1}-10", f"0-{S1}-10"),  # restored by mariabackup, promoted, demoted: its binary log is empty
        (f"0-{S2}-8", f"0-{S1}-10,1-{S2}-3", f"0-{S1}-10,1-{S2}-3"),
        (f"0-{S2}-10", f"0-{S1}-10", f"0-{S2}-10"),  # a tie: its binary log
        ("", "", ""),
    ],
)
def test_where_a_demoted_server_resumes(binlog, slave, resume):
    assert gtid.resume_position(binlog, slave) == resume


@pytest.mark.parametrize(("position", "state"), [("0-1", "0-1-1"), ("0-1-1", "0-1-x"), (12, ""), ("0-1-1", "0-1-1,")])
def test_gtid_missing_refuses_bad_input(position, state):
    with pytest.raises(SaltInvocationError):
        mod.gtid_missing(position, state)


def test_gtid_missing_documents_itself():
    assert "CLI Example:" in mod.gtid_missing.__doc__
    assert "CLI Example:" in mod.source_binlog_state.__doc__


# ---- the replica state over a stand-in module ----------------------------------------------------


class Server:
    """The calls replica_configured makes on this host and on its source, and what they return."""

    def __init__(self, binlog="", slave="", settings=None, running=False, source_state="", source_error=None,
                 io_errno=None, io_error=""):  # fmt: skip
        self.status = {
            "gtid_binlog_pos": binlog,
            "gtid_slave_pos": slave,
            "gtid_current_pos": binlog or slave,
            "replica_configured": settings is not None,
            "Slave_IO_Running": "Yes" if running else ("No" if settings else None),
            "Slave_SQL_Running": "Yes" if running else ("No" if settings else None),
            "Last_IO_Errno": io_errno,
            "Last_IO_Error": io_error,
            "Last_SQL_Error": "",
        }
        self.settings = settings
        self.source_state = source_state
        self.source_error = source_error
        self.calls = []

    def salt(self):
        def status(**_):
            return dict(self.status)

        def replica_settings(**_):
            return dict(self.settings) if self.settings else None

        def source_binlog_state(**kwargs):
            self.calls.append(("source_binlog_state", kwargs))
            if self.source_error:
                raise CommandExecutionError(self.source_error)
            return {"gtid_binlog_state": self.source_state, "gtid_binlog_pos": ""}

        def configure_replica(**kwargs):
            self.calls.append(("configure_replica", kwargs))
            if kwargs.get("slave_pos_from_binlog"):
                self.status["gtid_slave_pos"] = self.status["gtid_binlog_pos"]
            self.settings = {key: kwargs[key] for key in ("master_user", "ssl_ca", "ssl_cert", "ssl_key")}
            self.settings.update(
                master_host=kwargs["master_host"], master_port=kwargs["master_port"], ssl_verify=True,
                use_gtid="slave_pos",
            )  # fmt: skip
            self.status.update(Slave_IO_Running="Yes", Slave_SQL_Running="Yes", replica_configured=True)

        def start_replica(**kwargs):
            self.calls.append(("start_replica", kwargs))
            self.status.update(Slave_IO_Running="Yes", Slave_SQL_Running="Yes")

        return {
            "mariadb_replication.status": status,
            "mariadb_replication.replica_settings": replica_settings,
            "mariadb_replication.source_binlog_state": source_binlog_state,
            "mariadb_replication.gtid_missing": mod.gtid_missing,
            "mariadb_replication.gtid_compare": mod.gtid_compare,
            "mariadb_replication.configure_replica": configure_replica,
            "mariadb_replication.start_replica": start_replica,
        }

    def changed(self):
        return [name for name, _ in self.calls if name != "source_binlog_state"]


WANTED = {
    "master_user": "repl",
    "ssl_ca": "/etc/mysql/ssl/ca.pem",
    "ssl_cert": "/etc/mysql/ssl/client.pem",
    "ssl_key": "/etc/mysql/ssl/client.key",
    "master_host": SOURCE,
    "master_port": 3306,
    "ssl_verify": True,
    "use_gtid": "slave_pos",
}


@pytest.fixture
def apply(monkeypatch):
    def run(server, test=False):
        monkeypatch.setattr(states, "__salt__", server.salt(), raising=False)
        monkeypatch.setattr(states, "__opts__", {"test": test, "id": "db1-masterdb"}, raising=False)
        return states.replica_configured(
            SOURCE, "repl", "secret", WANTED["ssl_ca"], ssl_cert=WANTED["ssl_cert"], ssl_key=WANTED["ssl_key"],
            source_minion="db2", replica_address="10.10.10.11",
        )  # fmt: skip

    return run


@pytest.mark.parametrize("test", [False, True])
def test_a_forked_old_primary_is_refused_and_left_alone(apply, test):
    server = Server(binlog=f"0-{S1}-12", slave=f"0-{S2}-5", source_state=f"0-{S1}-11,0-{S2}-13")
    ret = apply(server, test=test)
    assert ret["result"] is False and ret["changes"] == {}, ret
    comment = ret["comment"]
    for part in ("db1-masterdb holds", f"0-{S1}-12", SOURCE, "salt-run db.rejoin db1-masterdb refuses it too",
                 "salt-run minion_key.replace db1-masterdb", "make lab-replace HOST=db1-masterdb"):  # fmt: skip
        assert part in comment, (part, comment)
    assert "Traceback" not in comment
    assert server.changed() == []
    # the source was asked as the replication account, over TLS with the client certificate
    (_, asked), *_ = server.calls
    assert asked["master_host"] == SOURCE and asked["master_user"] == "repl" and asked["ssl_key"] == WANTED["ssl_key"]


def test_a_forked_replica_pointing_elsewhere_is_refused_too(apply):
    old = dict(WANTED, master_host="db1-masterdb.production.wpdn")
    server = Server(binlog=f"0-{S1}-12", slave=f"0-{S1}-12", settings=old, running=True, source_state=f"0-{S1}-11")
    ret = apply(server)
    assert ret["result"] is False and f"0-{S1}-12" in ret["comment"] and server.changed() == []


def test_an_unreachable_source_changes_nothing(apply):
    server = Server(binlog=f"0-{S1}-12", source_error="cannot connect to MariaDB (db2.production.wpdn:3306): timed out")
    ret = apply(server)
    assert ret["result"] is False and ret["changes"] == {} and server.changed() == []
    assert "cannot check whether db1-masterdb holds transactions" in ret["comment"] and "timed out" in ret["comment"]


def test_an_old_primary_that_lost_nothing_replicates_from_its_own_binlog_position(apply):
    server = Server(binlog=f"0-{S1}-12", slave=f"0-{S2}-5", source_state=f"0-{S1}-12,0-{S2}-14")
    would = apply(server, test=True)
    assert would["result"] is None and server.changed() == []
    assert would["changes"]["gtid_slave_pos"] == {"old": f"0-{S2}-5", "new": f"0-{S1}-12"}
    assert "continuing after its own binary log" in would["comment"]
    ret = apply(server)
    assert ret["result"] is True and ret["comment"] == f"replicating from {SOURCE}", ret
    assert ret["changes"]["gtid_slave_pos"] == {"old": f"0-{S2}-5", "new": f"0-{S1}-12"}
    assert server.changed() == ["configure_replica"]
    assert server.calls[-1][1]["slave_pos_from_binlog"] is True
    assert server.status["gtid_slave_pos"] == f"0-{S1}-12"
    # and then it is left alone
    server.calls.clear()
    assert apply(server)["comment"] == f"already replicating from {SOURCE}" and server.calls == []


def test_a_stopped_replica_with_a_stale_slave_position_is_re_pointed_not_just_started(apply):
    # configured as wanted, threads stopped (error 1236 from the stale position), the binary log ahead of it
    server = Server(binlog=f"0-{S1}-12", slave=f"0-{S2}-5", settings=WANTED, source_state=f"0-{S1}-12,0-{S2}-14",
                    io_errno=1236, io_error="Got fatal error 1236 from master")  # fmt: skip
    ret = apply(server)
    assert ret["result"] is True and server.changed() == ["configure_replica"], ret
    assert ret["changes"] == {"gtid_slave_pos": {"old": f"0-{S2}-5", "new": f"0-{S1}-12"}}


def test_a_plain_replica_is_not_touched_by_the_binlog_rule(apply):
    pos = f"0-{S2}-14"
    server = Server(binlog=pos, slave=pos, settings=WANTED, source_state=pos)
    ret = apply(server)
    assert ret["result"] is True and ret["changes"] == {"started": True} and server.changed() == ["start_replica"]


def test_a_fresh_server_asks_nothing_of_the_source(apply):
    server = Server()
    ret = apply(server, test=True)
    assert ret["result"] is None and "would copy" in ret["comment"] and server.calls == []


def test_error_1236_after_configuring_points_at_the_rebuild(monkeypatch):
    status = {"Slave_IO_Running": "No", "Slave_SQL_Running": "Yes", "Last_IO_Errno": 1236,
              "Last_IO_Error": "Got fatal error 1236 from master when reading data from binary log: 'Error: "
                               "connecting slave requested to start from GTID 0-1-12, which is not in the master's "
                               "binlog'", "Last_SQL_Error": ""}  # fmt: skip
    monkeypatch.setattr(
        states,
        "__salt__",
        {"mariadb_replication.status": lambda **_: status, "mariadb_replication.replica_settings": lambda **_: WANTED},
        raising=False,
    )
    monkeypatch.setattr(states, "__opts__", {"test": False, "id": "db3"}, raising=False)
    ret = states._check_replicating(states._ret(SOURCE), SOURCE, WANTED, {})
    assert ret["result"] is False
    assert "error 1236" in ret["comment"] and "not in the master's binlog" in ret["comment"]
    assert "make lab-replace HOST=db3" in ret["comment"] and "salt-run minion_key.replace db3" in ret["comment"]
