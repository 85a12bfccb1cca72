"""
The states of ``_states/mariadb_replication.py`` through salt-factories' loader mock (``configure_loader_modules``,
as salt's and salt extensions' own state unit tests do): ``__salt__`` holds a stand-in of the execution module's
functions over one server (``FakeMariaDB``, recording every call), ``__opts__`` the test mode. Every test runs in
both modes: a state with something to do reports result None with test=True and calls nothing that changes the
server. The real servers are in tests/functional (test_mariadb_replication, test_replica_divergence,
test_db_databases).

The stand-in reads the arguments of a call by meaning (``meaning``): keywords, or mappings and dataclasses (a spec)
passed positionally or under a keyword, so the tests do not depend on how the state hands them over.
"""

import dataclasses
from collections.abc import Mapping

import pytest
from salt.exceptions import CommandExecutionError

from _modules import mariadb_replication as replication_module
from _states import mariadb_replication as replication_states

S1, S2 = 168430091, 168430092
HOST = "db1-masterdb"
SOURCE = "db2.production.wpdn"
FN = "mariadb_replication."
# the execution functions that change the server (the account functions too, unless called with test=True)
CHANGING = {"configure_replica", "start_replica", "provision_replica", "set_read_only"}
ACCOUNT_FUNCTIONS = ("replication_user_present", "user_present", "user_absent_except", "grant_present",
                     "database_present")  # fmt: skip


def _spec(value):
    """A dataclass instance as a dict, else None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return None


def meaning(args, kwargs):
    """One mapping of a call's arguments: mappings and dataclasses (a spec) merged in, other positionals in order."""
    merged = {"positional": []}
    for value in args:
        spec = dict(value) if isinstance(value, Mapping) else _spec(value)
        if spec is None:
            merged["positional"].append(value)
        else:
            merged.update(spec)
    for key, value in kwargs.items():
        spec = _spec(value)
        merged.update(spec if spec is not None else {key: value})
    return merged


@dataclasses.dataclass
class Planned:
    """What an account function (dry run with test=True, then the change) would change, whether that takes."""

    changes: dict = dataclasses.field(default_factory=dict)
    takes: bool = True
    error: str | None = None


class FakeMariaDB:
    """The execution module's functions the states call, answering from one server's state; records every call."""

    def __init__(self):
        self.status = {
            "server_id": S1,
            "read_only": False,
            "replica_configured": False,
            "Master_Host": None,
            "gtid_binlog_pos": "",
            "gtid_slave_pos": "",
            "gtid_current_pos": "",
            "Slave_IO_Running": None,
            "Slave_SQL_Running": None,
            "Last_IO_Errno": None,
            "Last_IO_Error": "",
            "Last_SQL_Error": "",
        }
        self.settings = None
        self.source = {"gtid_binlog_state": "", "gtid_binlog_pos": "", "gtid_slave_pos": ""}
        self.source_error = None
        self.peers = {}  # fqdn -> read_only
        self.health = {"healthy": True, "problems": [], "seconds_behind_master": 0}
        self.planned = {function: Planned() for function in ACCOUNT_FUNCTIONS}
        self.accounts = {("wiki", "10.10.10.51")}  # (user, host) that exist, for user_info
        self.read_only_takes = True
        self.after_replicating = {}  # status once replication is (re)configured or started (an IO error, ...)
        self.calls = []

    def replicating(self, source=SOURCE, **status):
        """A replica of ``source`` configured as the state wants it, threads running."""
        self.settings = dict(WANTED, master_host=source)
        self.status.update(replica_configured=True, Master_Host=source, Slave_IO_Running="Yes", Slave_SQL_Running="Yes")
        self.status.update(status)

    def changed(self):
        """The names of the calls that changed the server, in order."""
        return [name for name, args in self.calls if name in CHANGING or (name in self.planned and not args["test"])]

    def call(self, name):
        """The arguments (by meaning) of the one call of ``name``."""
        (args,) = [args for called, args in self.calls if called == name]
        return args

    def _record(self, name, args, kwargs):
        self.calls.append((name, meaning(args, kwargs)))
        return self.calls[-1][1]

    def _start(self):
        self.status.update(Slave_IO_Running="Yes", Slave_SQL_Running="Yes")
        self.status.update(self.after_replicating)

    def salt(self):
        def status(*args, **kwargs):
            return dict(self.status)

        def replica_settings(*args, **kwargs):
            return dict(self.settings) if self.settings else None

        def source_binlog_state(*args, **kwargs):
            self._record("source_binlog_state", args, kwargs)
            if self.source_error:
                raise CommandExecutionError(self.source_error)
            return dict(self.source)

        def configure_replica(*args, **kwargs):
            asked = self._record("configure_replica", args, kwargs)
            if asked.get("slave_pos_from_binlog"):
                self.status["gtid_slave_pos"] = self.status["gtid_binlog_pos"]
            self.settings = {key: asked[key] for key in ("master_host", "master_port", "master_user", "ssl_ca",
                                                         "ssl_cert", "ssl_key")}  # fmt: skip
            self.settings.update(ssl_verify=True, use_gtid="slave_pos")
            self.status.update(replica_configured=True, Master_Host=asked["master_host"])
            self._start()

        def start_replica(*args, **kwargs):
            self._record("start_replica", args, kwargs)
            self._start()

        def provision_replica(*args, **kwargs):
            asked = self._record("provision_replica", args, kwargs)
            configure_replica(**{key: asked[key] for key in ("master_host", "master_port", "master_user",
                                                             "ssl_ca", "ssl_cert", "ssl_key")})  # fmt: skip
            self.calls.pop()  # provision_replica configures the replica itself: one call
            self.status.update(gtid_slave_pos=f"0-{S2}-40", gtid_current_pos=f"0-{S2}-40")
            return {"gtid_slave_pos": f"0-{S2}-40", "replica": {"replicating": True}}

        def set_read_only(*args, **kwargs):
            asked = self._record("set_read_only", args, kwargs)
            enabled = asked["enabled"] if "enabled" in asked else asked["positional"][0]
            if self.read_only_takes:
                self.status["read_only"] = bool(enabled)
            return {"read_only": self.status["read_only"], "changed": self.read_only_takes}

        def peers_read_only(peers, **kwargs):
            self._record("peers_read_only", (), dict(kwargs, peers=peers))
            hosts = [peer["host"] for peer in peers]
            return {"read_only": {host: self.peers[host] for host in hosts if host in self.peers},
                    "unreachable": {host: "timed out" for host in hosts if host not in self.peers}}  # fmt: skip

        def health(*args, **kwargs):
            self._record("health", args, kwargs)
            if isinstance(self.health, Exception):
                raise self.health
            return dict(self.health)

        def user_info(user, host="%", **kwargs):
            return {"user": user, "host": host} if (user, host) in self.accounts else None

        def account(function):
            def run(*args, test=False, **kwargs):
                self._record(function, args, dict(kwargs, test=test))
                planned = self.planned[function]
                if planned.error:
                    raise CommandExecutionError(planned.error)
                changes = dict(planned.changes)
                if not test and planned.takes:
                    planned.changes = {}
                return {"changed": bool(changes), "changes": changes}

            return run

        functions = {
            "status": status,
            "replica_settings": replica_settings,
            "source_binlog_state": source_binlog_state,
            "configure_replica": configure_replica,
            "start_replica": start_replica,
            "provision_replica": provision_replica,
            "set_read_only": set_read_only,
            "peers_read_only": peers_read_only,
            "health": health,
            "user_info": user_info,
            # pure functions: the execution module's own
            "gtid_missing": replication_module.gtid_missing,
            "gtid_compare": replication_module.gtid_compare,
            **{function: account(function) for function in ACCOUNT_FUNCTIONS},
        }
        return {FN + name: function for name, function in functions.items()}


@pytest.fixture(params=[False, True], ids=["apply", "test"], autouse=True)
def test_mode(request):
    """__opts__["test"]: every test of this module runs in both modes (autouse: the loader mock asks for it late)."""
    return request.param


@pytest.fixture
def server():
    return FakeMariaDB()


@pytest.fixture
def configure_loader_modules(server, test_mode):
    return {replication_states: {"__salt__": server.salt(), "__opts__": {"test": test_mode, "id": HOST}}}


def assert_would_change_or_changed(ret, server, test_mode, changed):
    """A state with something to do: with test=True result None and no change; otherwise ``changed`` called."""
    if test_mode:
        assert ret["result"] is None, ret
        assert server.changed() == [], server.calls
    else:
        assert ret["result"] is True, ret
        assert server.changed() == changed, server.calls


def test_virtual_needs_the_execution_module(server):
    assert replication_states.__virtual__() == "mariadb_replication"
    replication_states.__salt__.pop(FN + "status")
    loaded, why = replication_states.__virtual__()
    assert loaded is False and "mariadb_replication execution module is not available" in why


# ---- the account states: dry run, change, check again ------------------------------------------------

CONNECTION = {"connection_unix_socket": "/run/mysqld/mysqld.sock"}
ACCOUNT_STATES = [
    # (state, its arguments, the execution function, what it is asked (by meaning), the comment's subject)
    ("replication_user_present", {"name": "repl", "password": "pw", "host": "10.10.10.12"},
     "replication_user_present", {"user": "repl", "password": "pw", "host": "10.10.10.12", "require": "X509"},
     "replication account repl@10.10.10.12"),
    ("user_present", {"name": "wiki", "password": "pw", "host": "10.10.10.51", "ssl_require": "SSL"},
     "user_present", {"user": "wiki", "password": "pw", "host": "10.10.10.51", "require": "SSL"},
     "account wiki@10.10.10.51"),
    ("user_absent_except", {"name": "repl", "hosts": ["10.10.10.12"]},
     "user_absent_except", {"user": "repl", "hosts": ["10.10.10.12"]}, "accounts of repl elsewhere"),
    ("grant_present", {"name": "wiki", "host": "10.10.10.51", "privileges": ["SELECT"], "database": "wiki"},
     "grant_present", {"user": "wiki", "host": "10.10.10.51", "privileges": ["SELECT"], "database": "wiki",
                       "exact": False}, "grants of wiki@10.10.10.51 on wiki"),
    ("database_present", {"name": "wiki"},
     "database_present", {"name": "wiki", "character_set": "utf8mb4", "collate": None}, "database wiki"),
]  # fmt: skip
ACCOUNT_IDS = [case[0] for case in ACCOUNT_STATES]


@pytest.mark.parametrize(("state", "kwargs", "function", "asked", "what"), ACCOUNT_STATES, ids=ACCOUNT_IDS)
def test_account_state_already_as_wanted(server, state, kwargs, function, asked, what):
    ret = getattr(replication_states, state)(**kwargs, **CONNECTION)
    assert ret == {"name": kwargs["name"], "result": True, "changes": {}, "comment": f"{what} is already as wanted"}
    assert server.changed() == []
    # the dry run asked for exactly what the state was given, the connection passed through
    assert server.call(function) == {"positional": [], **asked, **CONNECTION, "test": True}


@pytest.mark.parametrize(("state", "kwargs", "function", "asked", "what"), ACCOUNT_STATES, ids=ACCOUNT_IDS)
def test_account_state_changes_what_differs(server, test_mode, state, kwargs, function, asked, what):
    server.planned[function].changes = {"password": "changed"}
    ret = getattr(replication_states, state)(**kwargs, **CONNECTION)
    assert ret["changes"] == {"password": "changed"}
    assert_would_change_or_changed(ret, server, test_mode, [function])
    assert ret["comment"] == f"{what} {'would be changed' if test_mode else 'changed'}"
    if not test_mode:
        applied = next(args for name, args in server.calls if name == function and not args["test"])
        assert applied == {"positional": [], **asked, **CONNECTION, "test": False}


@pytest.mark.parametrize(("state", "kwargs", "function", "asked", "what"), ACCOUNT_STATES, ids=ACCOUNT_IDS)
def test_account_state_fails_when_the_change_does_not_take(server, test_mode, state, kwargs, function, asked, what):
    server.planned[function] = Planned(changes={"require": {"old": None, "new": "SSL"}}, takes=False)
    ret = getattr(replication_states, state)(**kwargs)
    if test_mode:
        assert ret["result"] is None and server.changed() == []
    else:
        assert ret["result"] is False and ret["comment"] == f"{what} was changed but still differs from what was asked"
        assert ret["changes"] == {"require": {"old": None, "new": "SSL"}}


@pytest.mark.parametrize(("state", "kwargs", "function", "asked", "what"), ACCOUNT_STATES, ids=ACCOUNT_IDS)
def test_account_state_reports_the_modules_error(server, state, kwargs, function, asked, what):
    server.planned[function].error = "cannot connect to MariaDB (/run/mysqld/mysqld.sock): refused"
    ret = getattr(replication_states, state)(**kwargs)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == f"{what}: cannot connect to MariaDB (/run/mysqld/mysqld.sock): refused"
    assert server.changed() == []


def test_grant_dry_run_for_an_account_not_created_yet(server, test_mode):
    """In a dry run the account state before only said it would create the account: the grant would follow."""
    server.planned["grant_present"].changes = {"granted": ["SELECT"], "on": "`wiki`.*"}
    ret = replication_states.grant_present("wiki", "10.10.10.99", ["SELECT"], "wiki")
    assert_would_change_or_changed(ret, server, test_mode, ["grant_present"])
    if test_mode:
        assert ret["changes"] == {"granted": ["SELECT"], "on": "wiki"}
        assert ret["comment"] == "grants of wiki@10.10.10.99 on wiki would be granted (the account does not exist yet)"
        assert "grant_present" not in [name for name, _ in server.calls]


# ---- read_only: never two primaries ------------------------------------------------------------------

PEERS = [
    {"name": "db1-masterdb", "fqdn": "db1-masterdb.production.wpdn", "server_id": S1},
    {"name": "db2", "fqdn": SOURCE, "server_id": S2},
]
PEER_CHECK = {"peers": PEERS, "peer_password": "repl-secret", "ssl_ca": "/etc/mysql/ssl/ca.pem",
              "masterdb": "db1-masterdb"}  # fmt: skip


@pytest.mark.parametrize("enabled", [True, False])
def test_read_only_already_as_wanted(server, enabled):
    server.status["read_only"] = enabled
    ret = replication_states.read_only("masterdb", enabled=enabled, **PEER_CHECK)
    assert ret["result"] is True and ret["comment"] == f"read_only is already {'ON' if enabled else 'OFF'}"
    assert server.changed() == [] and "peers_read_only" not in [name for name, _ in server.calls]


def test_made_writable_when_no_peer_takes_writes(server, test_mode):
    server.status["read_only"] = True
    server.peers = {SOURCE: True}
    ret = replication_states.read_only("masterdb", enabled=False, **PEER_CHECK)
    assert ret["changes"] == {"read_only": {"old": True, "new": False}}
    assert_would_change_or_changed(ret, server, test_mode, ["set_read_only"])
    assert server.status["read_only"] is test_mode
    # the peers asked over TLS as the replication account, this server left out
    asked = server.call("peers_read_only")
    assert [peer["host"] for peer in asked["peers"]] == [SOURCE]
    assert (asked["user"], asked["password"], asked["ssl_ca"]) == ("repl", "repl-secret", "/etc/mysql/ssl/ca.pem")


def test_not_made_writable_while_it_replicates(server):
    server.status["read_only"] = True
    server.replicating()
    ret = replication_states.read_only("masterdb", enabled=False, **PEER_CHECK)
    assert ret["result"] is False and ret["changes"] == {}
    assert f"{HOST} was not made writable: it replicates from {SOURCE}" in ret["comment"]
    assert "salt-run db.switchover db1-masterdb" in ret["comment"]
    assert server.changed() == []


def test_not_made_writable_while_a_peer_takes_writes(server):
    server.status["read_only"] = True
    server.peers = {SOURCE: False}
    ret = replication_states.read_only("masterdb", enabled=False, **PEER_CHECK)
    assert ret["result"] is False and f"{SOURCE} takes writes (two writable primaries" in ret["comment"]
    assert server.changed() == []


def test_the_only_primary_is_not_made_read_only(server):
    server.peers = {SOURCE: True}
    ret = replication_states.read_only("masterdb", enabled=True, **PEER_CHECK)
    assert ret["result"] is False
    assert f"{HOST} was not made read-only: it is the running primary and no other db host" in ret["comment"]
    assert server.changed() == []


def test_of_two_primaries_the_one_not_named_masterdb_steps_down(server, test_mode):
    server.peers = {SOURCE: False}
    ret = replication_states.read_only("masterdb", enabled=True, **PEER_CHECK)
    assert ret["changes"] == {"read_only": {"old": False, "new": True}}
    assert_would_change_or_changed(ret, server, test_mode, ["set_read_only"])


def test_read_only_that_does_not_take_fails(server, test_mode):
    server.read_only_takes = False
    ret = replication_states.read_only("replica", enabled=True)  # no peers: a replica's read_only
    if test_mode:
        assert ret["result"] is None and server.changed() == []
    else:
        assert ret["result"] is False and ret["comment"] == "read_only did not take the new value"


@pytest.mark.parametrize(
    ("peer_check", "message"),
    [
        ({"peers": "db2"}, "peers must be a list of db hosts"),
        ({"peers": PEERS, "ssl_ca": "/etc/mysql/ssl/ca.pem"}, "needs peer_password and ssl_ca"),
    ],
)
def test_read_only_refuses_bad_peer_arguments(server, peer_check, message):
    server.status["read_only"] = True
    ret = replication_states.read_only("masterdb", enabled=False, **peer_check)
    assert ret["result"] is False and message in ret["comment"] and server.changed() == []


# ---- replica_configured ------------------------------------------------------------------------------

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


def configure(**overrides):
    """replica_configured as db.replication calls it on db1-masterdb, replicating from db2."""
    args = dict(name=SOURCE, master_user="repl", master_password="secret", ssl_ca=WANTED["ssl_ca"],
                ssl_cert=WANTED["ssl_cert"], ssl_key=WANTED["ssl_key"], source_minion="db2",
                replica_address="10.10.10.11")  # fmt: skip
    return replication_states.replica_configured(**dict(args, **overrides))


def test_a_healthy_replica_is_left_alone(server):
    server.replicating(gtid_binlog_pos=f"0-{S2}-14", gtid_slave_pos=f"0-{S2}-14")
    ret = configure()
    assert ret["result"] is True and ret["comment"] == f"already replicating from {SOURCE}" and server.calls == []


def test_a_fresh_server_is_provisioned_from_the_source(server, test_mode):
    ret = configure(stream_port=4455)
    assert_would_change_or_changed(ret, server, test_mode, ["provision_replica"])
    if test_mode:
        assert ret["changes"]["provisioned"] == {"from": SOURCE, "method": "mariabackup"}
        assert ret["comment"] == f"would copy {SOURCE}'s data (mariabackup) and replicate from it"
        assert server.calls == []  # a fresh server asks nothing of the source
        return
    assert ret["changes"] == {"provisioned": {"from": SOURCE, "method": "mariabackup", "gtid_slave_pos": f"0-{S2}-40"}}
    assert ret["comment"] == f"replicating from {SOURCE}"
    asked = server.call("provision_replica")
    assert {key: asked[key] for key in WANTED if key in asked} == {
        key: value for key, value in WANTED.items() if key not in ("ssl_verify", "use_gtid")
    }
    assert (asked["master_password"], asked["source_minion"], asked["stream_port"]) == ("secret", "db2", 4455)
    assert (asked["replica_address"], asked["method"], asked["overwrite_fresh"]) == ("10.10.10.11", "mariabackup", True)


def test_a_mariabackup_copy_needs_the_source_minion(server, test_mode):
    ret = configure(source_minion=None)
    if test_mode:
        assert ret["result"] is None and server.changed() == []
    else:
        assert ret["result"] is False and "needs source_minion" in ret["comment"] and server.changed() == []


def test_a_replica_pointing_elsewhere_is_re_pointed(server, test_mode):
    pos = f"0-{S2}-14"
    server.replicating(source="db3.production.wpdn", gtid_binlog_pos=pos, gtid_slave_pos=pos)
    server.source["gtid_binlog_state"] = pos
    ret = configure()
    assert ret["changes"] == {"master_host": {"old": "db3.production.wpdn", "new": SOURCE}}
    assert_would_change_or_changed(ret, server, test_mode, ["configure_replica"])
    if not test_mode:
        asked = server.call("configure_replica")
        assert (asked["master_host"], asked["master_password"], asked["ssl_key"]) == (
            SOURCE,
            "secret",
            WANTED["ssl_key"],
        )
        assert not asked.get("slave_pos_from_binlog")
        assert server.settings["master_host"] == SOURCE


def test_a_forked_old_primary_is_refused_and_left_alone(server):
    server.status.update(gtid_binlog_pos=f"0-{S1}-12", gtid_slave_pos=f"0-{S2}-5", gtid_current_pos=f"0-{S1}-12")
    server.source["gtid_binlog_state"] = f"0-{S1}-11,0-{S2}-13"
    ret = configure()
    assert ret["result"] is False and ret["changes"] == {}, ret
    for part in (f"{HOST} holds", f"0-{S1}-12", SOURCE, f"salt-run db.rejoin {HOST} refuses it too",
                 f"salt-run minion_key.replace {HOST}", f"make lab-replace HOST={HOST}"):  # fmt: skip
        assert part in ret["comment"], (part, ret["comment"])
    assert "Traceback" not in ret["comment"]
    assert server.changed() == []
    # the source was asked as the replication account, over TLS with the client certificate
    asked = server.call("source_binlog_state")
    assert (asked["master_host"], asked["master_user"], asked["ssl_key"]) == (SOURCE, "repl", WANTED["ssl_key"])


def test_a_forked_replica_pointing_elsewhere_is_refused_too(server):
    server.replicating(source="db1-masterdb.production.wpdn", gtid_binlog_pos=f"0-{S1}-12",
                       gtid_slave_pos=f"0-{S1}-12", gtid_current_pos=f"0-{S1}-12")  # fmt: skip
    server.source["gtid_binlog_state"] = f"0-{S1}-11"
    ret = configure()
    assert ret["result"] is False and f"0-{S1}-12" in ret["comment"] and server.changed() == []


def test_an_unreachable_source_changes_nothing(server):
    server.status.update(gtid_binlog_pos=f"0-{S1}-12", gtid_current_pos=f"0-{S1}-12")
    server.source_error = f"cannot connect to MariaDB ({SOURCE}:3306): timed out"
    ret = configure()
    assert ret["result"] is False and ret["changes"] == {} and server.changed() == []
    assert f"cannot check whether {HOST} holds transactions" in ret["comment"] and "timed out" in ret["comment"]


def test_an_old_primary_that_lost_nothing_replicates_from_its_own_binlog_position(server, test_mode):
    server.status.update(gtid_binlog_pos=f"0-{S1}-12", gtid_slave_pos=f"0-{S2}-5", gtid_current_pos=f"0-{S1}-12")
    server.source["gtid_binlog_state"] = f"0-{S1}-12,0-{S2}-14"
    ret = configure()
    assert ret["changes"]["gtid_slave_pos"] == {"old": f"0-{S2}-5", "new": f"0-{S1}-12"}
    assert_would_change_or_changed(ret, server, test_mode, ["configure_replica"])
    if test_mode:
        assert "continuing after its own binary log" in ret["comment"]
        return
    assert ret["comment"] == f"replicating from {SOURCE}", ret
    assert server.call("configure_replica")["slave_pos_from_binlog"] is True
    assert server.status["gtid_slave_pos"] == f"0-{S1}-12"
    # and then it is left alone
    server.calls.clear()
    assert configure()["comment"] == f"already replicating from {SOURCE}" and server.calls == []


def test_a_stopped_replica_with_a_stale_slave_position_is_re_pointed_not_just_started(server, test_mode):
    # configured as wanted, threads stopped (error 1236 from the stale position), the binary log ahead of it
    server.replicating(gtid_binlog_pos=f"0-{S1}-12", gtid_slave_pos=f"0-{S2}-5", gtid_current_pos=f"0-{S1}-12",
                       Slave_IO_Running="No", Last_IO_Errno=1236, Last_IO_Error="Got fatal error 1236 from master")  # fmt: skip
    server.after_replicating = {"Last_IO_Errno": None, "Last_IO_Error": ""}
    server.source["gtid_binlog_state"] = f"0-{S1}-12,0-{S2}-14"
    ret = configure()
    assert ret["changes"] == {"gtid_slave_pos": {"old": f"0-{S2}-5", "new": f"0-{S1}-12"}}
    assert_would_change_or_changed(ret, server, test_mode, ["configure_replica"])


def test_a_plain_replica_is_not_touched_by_the_binlog_rule(server, test_mode):
    pos = f"0-{S2}-14"
    server.replicating(gtid_binlog_pos=pos, gtid_slave_pos=pos, Slave_IO_Running="No", Slave_SQL_Running="No")
    server.source["gtid_binlog_state"] = pos
    ret = configure()
    assert ret["changes"] == {"started": True}
    assert_would_change_or_changed(ret, server, test_mode, ["start_replica"])
    assert ret["comment"] == (f"would start replication from {SOURCE}" if test_mode else f"replicating from {SOURCE}")


def test_error_1236_after_configuring_points_at_the_rebuild(server, test_mode):
    pos = f"0-{S2}-14"
    server.replicating(source="db3.production.wpdn", gtid_binlog_pos=pos, gtid_slave_pos=pos)
    server.source["gtid_binlog_state"] = pos
    server.after_replicating = {
        "Slave_IO_Running": "No",
        "Last_IO_Errno": 1236,
        "Last_IO_Error": "Got fatal error 1236 from master when reading data from binary log: 'Error: connecting "
        "slave requested to start from GTID 0-1-12, which is not in the master's binlog'",
    }
    ret = configure()
    if test_mode:
        assert ret["result"] is None and server.changed() == []
        return
    assert ret["result"] is False and server.changed() == ["configure_replica"]
    assert "error 1236" in ret["comment"] and "not in the master's binlog" in ret["comment"]
    assert f"make lab-replace HOST={HOST}" in ret["comment"] and f"salt-run minion_key.replace {HOST}" in ret["comment"]


# ---- replication_healthy: reports, never changes -----------------------------------------------------


def test_a_healthy_replica_is_reported(server):
    server.health = {"healthy": True, "problems": [], "seconds_behind_master": 3}
    ret = replication_states.replication_healthy("replication", max_lag_seconds=60, **CONNECTION)
    assert ret == {
        "name": "replication",
        "result": True,
        "changes": {},
        "comment": "replicating, 3 s behind its source",
    }
    assert server.call("health") == {"positional": [], "max_lag_seconds": 60, **CONNECTION}


def test_an_unhealthy_replica_fails_the_state(server):
    server.health = {
        "healthy": False,
        "problems": ["IO thread not running", "120 s behind"],
        "seconds_behind_master": 120,
    }
    ret = replication_states.replication_healthy("replication")
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == "replication unhealthy: IO thread not running; 120 s behind"
    assert server.changed() == []


def test_health_errors_are_reported(server):
    server.health = CommandExecutionError("cannot connect to MariaDB (/run/mysqld/mysqld.sock): refused")
    ret = replication_states.replication_healthy("replication")
    assert ret["result"] is False and ret["comment"].startswith("replication health: cannot connect")
