"""
The MariaDB catalogue and pure SQL of ``_utils/rolestack_mariadb_sql.py``: SQL quoting, REQUIRE clauses, privileges
and grants as SHOW GRANTS prints them, the replica's settings and CHANGE MASTER, the status merge, and the one list
of privilege names the execution module and the inventory's validator share (the server side is exercised in
tests/functional/test_mariadb_replication.py).
"""

import pymysql
import pytest
import rolestack_inventory as inv
import rolestack_mariadb_sql as sql
from salt.exceptions import SaltInvocationError

from tests.support.paths import EXAMPLE_INVENTORY

# --- SQL quoting -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        (None, "NULL"),
        (True, "1"),
        (False, "0"),
        (3306, "3306"),
        ("plain", "'plain'"),
        ("it's", "'it\\'s'"),
        ("back\\slash", "'back\\\\slash'"),
        ("a'; DROP TABLE x; --", "'a\\'; DROP TABLE x; --'"),
        ("nul\0new\nline", "'nul\\0new\\nline'"),
    ],
)
def test_literal(value, quoted):
    assert sql.literal(value) == quoted


def test_literal_matches_pymysql_and_rejects_other_types():
    for value in ("x'y\"z\\", "%s", "ünïcode"):
        assert sql.literal(value) == pymysql.converters.escape_item(value, "utf8mb4")
    with pytest.raises(SaltInvocationError):
        sql.literal(1.5)


def test_quote_identifier():
    assert sql.quote_identifier("app") == "`app`"
    assert sql.quote_identifier("we`ird") == "`we``ird`"
    for bad in ("", "x" * 65, "nul\0", "trailing ", None, 5):
        with pytest.raises(SaltInvocationError):
            sql.quote_identifier(bad)


def test_account():
    assert sql.account("repl", "%") == "'repl'@'%'"
    assert sql.account("o'neil", "10.0.0.%") == "'o\\'neil'@'10.0.0.%'"
    for user, host in (("", "%"), ("repl", ""), (None, "%"), ("x" * 129, "%")):
        with pytest.raises(SaltInvocationError):
            sql.account(user, host)


# --- REQUIRE clauses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalized", "clause"),
    [
        (None, None, "REQUIRE NONE"),
        ("none", None, "REQUIRE NONE"),
        ("", None, "REQUIRE NONE"),
        ("ssl", "SSL", "REQUIRE SSL"),
        (" X509 ", "X509", "REQUIRE X509"),
        ({"subject": "/CN=db2"}, {"subject": "/CN=db2"}, "REQUIRE SUBJECT '/CN=db2'"),
        (
            {"subject": "/CN=db2", "issuer": "/CN=Rolestack CA"},
            {"subject": "/CN=db2", "issuer": "/CN=Rolestack CA"},
            "REQUIRE ISSUER '/CN=Rolestack CA' AND SUBJECT '/CN=db2'",
        ),
        ("SUBJECT '/CN=db2'", {"subject": "/CN=db2"}, "REQUIRE SUBJECT '/CN=db2'"),
        (
            "subject '/O=it''s/CN=db2' and ISSUER '/CN=CA'",
            {"subject": "/O=it's/CN=db2", "issuer": "/CN=CA"},
            "REQUIRE ISSUER '/CN=CA' AND SUBJECT '/O=it\\'s/CN=db2'",
        ),
    ],
)
def test_require(given, normalized, clause):
    assert sql.normalize_require(given) == normalized
    assert sql.require_clause(normalized) == clause


@pytest.mark.parametrize(
    "bad",
    [
        "TLS",
        "SUBJECT /CN=x",
        "SUBJECT '/CN=x' OR ISSUER '/CN=y'",
        "SUBJECT '/CN=x' AND",
        "SSL AND X509",
        {"serial": "1"},
        {},
        {"subject": ""},
        ["SSL"],
    ],
)
def test_require_malformed(bad):
    with pytest.raises(SaltInvocationError):
        sql.normalize_require(bad)


@pytest.mark.parametrize(
    ("row", "require"),
    [
        ({"ssl_type": ""}, None),
        ({"ssl_type": "ANY"}, "SSL"),
        ({"ssl_type": "X509"}, "X509"),
        (
            {"ssl_type": "SPECIFIED", "x509_subject": b"/CN=db2", "x509_issuer": b"", "ssl_cipher": b""},
            {"subject": "/CN=db2"},
        ),
    ],
)
def test_require_from_row(row, require):
    assert sql.require_from_row(row) == require


# --- privileges and grants -------------------------------------------------------------------------------


def test_normalize_privileges():
    assert sql.normalize_privileges("select, insert") == {"SELECT", "INSERT"}
    assert sql.normalize_privileges(["ALL"]) == {"ALL PRIVILEGES"}
    assert sql.normalize_privileges(["replication client", "Replica  Monitor", "REPLICATION SLAVE"]) == {
        "BINLOG MONITOR",
        "SLAVE MONITOR",
        "REPLICATION SLAVE",
    }
    for bad in (["SELECT", "DROP TABLE x"], [], "", [1], None):
        with pytest.raises(SaltInvocationError):
            sql.normalize_privileges(bad)


SHOW_GRANTS = [
    "GRANT REPLICATION SLAVE, BINLOG MONITOR, READ_ONLY ADMIN ON *.* TO `r`@`%` IDENTIFIED BY PASSWORD '*B690' REQUIRE SSL",
    "GRANT ALL PRIVILEGES ON `a_b`.* TO `r`@`%`",
    "GRANT SELECT, INSERT ON `we``ird`.* TO `r`@`%`",
    "GRANT SELECT (`User`, `Host`), INSERT ON `mysql`.`user` TO `r`@`%`",
    "GRANT EXECUTE ON PROCEDURE `app`.`p` TO `r`@`%`",
    "GRANT PROXY ON ``@`%` TO `root`@`localhost` WITH GRANT OPTION",
    "GRANT `app_role` TO `r`@`%`",
]


def test_parse_grants():
    assert sql.parse_grants(SHOW_GRANTS) == {
        "*.*": {"REPLICATION SLAVE", "BINLOG MONITOR", "READ_ONLY ADMIN"},
        "`a_b`.*": {"ALL PRIVILEGES"},
        "`we``ird`.*": {"SELECT", "INSERT"},
        "`mysql`.`user`": {"SELECT (`User`, `Host`)", "INSERT"},
        "`app`.`p`": {"EXECUTE"},
    }
    assert sql.parse_grants(["GRANT USAGE ON *.* TO `app`@`%`"]) == {"*.*": set()}


def test_grant_target_and_missing():
    assert sql.grant_target("*") == "*.*"
    assert sql.grant_target("we`ird") == "`we``ird`.*"
    assert sql.missing_privileges({"SELECT", "INSERT"}, {"SELECT"}) == {"INSERT"}
    assert sql.missing_privileges({"SELECT", "INSERT"}, {"ALL PRIVILEGES"}) == set()
    assert sql.missing_privileges({"USAGE"}, set()) == set()


# --- CHANGE MASTER ---------------------------------------------------------------------------------------


def _spec(**overrides):
    args = {
        "master_host": "db1.example",
        "master_user": "repl",
        "master_password": "p'w\\d",
        "ssl_ca": "/etc/mysql/tls/ca.pem",
    }
    args.update(overrides)
    return sql.ReplicaSpec.validated(**args)


def test_change_master_sql_quotes_every_value():
    statement = sql.change_master_sql(_spec(ssl_cert="/tls/client.pem", ssl_key="/tls/client.key", master_port="3307"))
    assert statement == (
        "CHANGE MASTER TO MASTER_HOST='db1.example', MASTER_PORT=3307, MASTER_USER='repl', "
        "MASTER_PASSWORD='p\\'w\\\\d', MASTER_CONNECT_RETRY=10, MASTER_SSL=1, MASTER_SSL_CA='/etc/mysql/tls/ca.pem', "
        "MASTER_SSL_CERT='/tls/client.pem', MASTER_SSL_KEY='/tls/client.key', MASTER_SSL_VERIFY_SERVER_CERT=1, "
        "MASTER_USE_GTID=slave_pos"
    )


def test_change_master_sql_clears_client_certificate():
    statement = sql.change_master_sql(_spec(ssl_verify=False, use_gtid="CURRENT_POS"))
    assert "MASTER_SSL_CERT='', MASTER_SSL_KEY=''" in statement
    assert "MASTER_SSL_VERIFY_SERVER_CERT=0, MASTER_USE_GTID=current_pos" in statement


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ssl_ca": None}, "ssl_ca is required"),
        ({"ssl_cert": "/c.pem"}, "both ssl_cert and ssl_key"),
        ({"use_gtid": "no"}, "use_gtid"),
        ({"use_gtid": "slave_pos; DROP"}, "use_gtid"),
        ({"master_port": 0}, "master_port"),
        ({"master_port": "3306; DROP"}, "master_port"),
        ({"master_host": ""}, "master_host"),
        ({"master_password": ""}, "master_password"),
        ({"connect_retry": 0}, "connect_retry"),
    ],
)
def test_replica_spec_refuses(overrides, message):
    with pytest.raises(SaltInvocationError, match=message):
        _spec(**overrides)


# --- status merge ----------------------------------------------------------------------------------------


def _variables(**values):
    base = {
        "read_only": "OFF",
        "log_bin": "ON",
        "log_slave_updates": "ON",
        "gtid_strict_mode": "ON",
        "rpl_semi_sync_master_enabled": "OFF",
        "rpl_semi_sync_slave_enabled": "OFF",
        "server_id": "1",
        "gtid_domain_id": "0",
        "gtid_current_pos": "0-1-4",
        "gtid_slave_pos": "",
        "gtid_binlog_pos": "0-1-4",
        "binlog_format": "ROW",
        "rpl_semi_sync_master_wait_point": "AFTER_COMMIT",
    }
    base.update(values)
    return [{"Variable_name": name, "Value": value} for name, value in base.items()]


STATUS_ROWS = [
    {"Variable_name": "Rpl_semi_sync_master_clients", "Value": "2"},
    {"Variable_name": "Rpl_semi_sync_master_status", "Value": "ON"},
    {"Variable_name": "Rpl_semi_sync_slave_status", "Value": "OFF"},
]

REPLICA_ROW = {
    "Connection_name": "",
    "Master_Host": "127.0.0.1",
    "Master_User": "repl",
    "Master_Port": 3306,
    "Connect_Retry": 10,
    "Slave_IO_Running": "Yes",
    "Slave_SQL_Running": "Yes",
    "Last_IO_Errno": 0,
    "Last_IO_Error": "",
    "Last_SQL_Error": "",
    "Seconds_Behind_Master": 0,
    "Master_SSL_Allowed": "Yes",
    "Master_SSL_CA_File": "/tls/ca.pem",
    "Master_SSL_Cert": "/tls/client.pem",
    "Master_SSL_Key": "/tls/client.key",
    "Master_SSL_Verify_Server_Cert": "Yes",
    "Using_Gtid": "Slave_Pos",
}


def test_merge_status_primary():
    merged = sql.merge_status([], _variables(), STATUS_ROWS, 2)
    assert merged["role"] == "primary"
    assert merged["read_only"] is False
    assert merged["log_bin"] is True
    assert merged["server_id"] == 1
    assert merged["gtid_binlog_pos"] == "0-1-4"
    assert merged["Rpl_semi_sync_master_clients"] == 2
    assert merged["Rpl_semi_sync_master_status"] is True
    assert merged["Rpl_semi_sync_slave_status"] is False
    assert merged["rpl_semi_sync_master_wait_point"] == "AFTER_COMMIT"
    assert merged["Slave_IO_Running"] is None
    assert merged["Seconds_Behind_Master"] is None
    assert merged["replica_configured"] is False
    assert merged["binlog_dump_threads"] == 2


def test_merge_status_replica_and_standalone():
    named = dict(REPLICA_ROW, Connection_name="other", Master_Host="10.0.0.9")
    merged = sql.merge_status([named, REPLICA_ROW], _variables(read_only="ON", server_id="2"), STATUS_ROWS, 0)
    assert merged["role"] == "replica"
    assert merged["Master_Host"] == "127.0.0.1"  # the default connection, not "other"
    assert merged["Slave_IO_Running"] == "Yes"
    assert merged["Using_Gtid"] == "Slave_Pos"
    assert merged["replica_connections"] == ["", "other"]
    assert sql.merge_status([], _variables(read_only="ON"), [], 0)["role"] == "standalone"
    # a connection reset with RESET SLAVE ALL leaves no host: not a replica
    assert sql.merge_status([dict(REPLICA_ROW, Master_Host="")], _variables(), [], 0)["role"] == "primary"


def test_merge_status_missing_variables_are_none():
    merged = sql.merge_status([], [{"Variable_name": "read_only", "Value": "OFF"}], [], 0)
    assert merged["rpl_semi_sync_master_enabled"] is None
    assert merged["server_id"] is None
    assert merged["Rpl_semi_sync_master_clients"] is None


def test_replica_settings_and_lag_from_row():
    assert sql.replica_settings_from_row(REPLICA_ROW) == {
        "master_host": "127.0.0.1",
        "master_port": 3306,
        "master_user": "repl",
        "ssl": True,
        "ssl_ca": "/tls/ca.pem",
        "ssl_cert": "/tls/client.pem",
        "ssl_key": "/tls/client.key",
        "ssl_verify": True,
        "use_gtid": "slave_pos",
        "connect_retry": 10,
    }
    assert sql.replica_settings_from_row(None) is None
    assert sql.lag_from_row(REPLICA_ROW)["replicating"] is True
    broken = dict(REPLICA_ROW, Slave_IO_Running="Connecting", Last_IO_Error="SSL error", Seconds_Behind_Master=None)
    assert sql.lag_from_row(broken) == {
        "configured": True,
        "io_running": False,
        "sql_running": True,
        "replicating": False,
        "seconds_behind_master": None,
        "last_io_error": "SSL error",
        "last_sql_error": None,
    }
    assert sql.lag_from_row({})["configured"] is False


HEALTHY = {
    "configured": True,
    "io_running": True,
    "sql_running": True,
    "seconds_behind_master": 2,
    "last_io_error": None,
    "last_sql_error": None,
}


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"configured": False}, "no replication source"),
        ({"io_running": False}, "IO thread"),
        ({"sql_running": False, "last_sql_error": "Duplicate entry"}, "Duplicate entry"),
        ({"seconds_behind_master": 31}, "31 s behind"),
    ],
)
def test_health_problems_name_the_cause(change, word):
    assert sql.health_problems(HEALTHY, 30) == []
    problems = sql.health_problems({**HEALTHY, **change}, 30)
    assert problems and any(word in problem for problem in problems), problems


def test_health_without_a_limit_ignores_lag():
    assert sql.health_problems({**HEALTHY, "seconds_behind_master": 10_000}, None) == []


# ---- one list of privilege names for the module and the inventory's validator


def _example_with_privileges(privileges):
    data = inv.load_yaml(EXAMPLE_INVENTORY.read_text(), str(EXAMPLE_INVENTORY))
    data["databases"]["wiki"] = {"users": {"wiki": {"roles": ["app"], "privileges": privileges}}}
    return data


@pytest.mark.parametrize("written", ["ALL", "all", "All  Privileges", "ALL PRIVILEGES"])
def test_all_means_all_privileges_for_the_module_and_the_inventory(written):
    # the inventory refused ALL ("unknown privilege") while the module granted it as ALL PRIVILEGES
    data = _example_with_privileges([written])
    assert inv.validate(data) == []
    assert inv.derive(data)["hosts"]["db2"]["db"]["users"]["wiki"]["grants"] == {"wiki": ["ALL PRIVILEGES"]}
    assert sql.normalize_privileges([written]) == {"ALL PRIVILEGES"}


def test_every_database_privilege_is_a_privilege_the_module_grants():
    assert sql.DB_PRIVILEGES < sql.PRIVILEGES
    for name in sorted(sql.DB_PRIVILEGES) + sorted(sql.PRIVILEGE_ALIASES):
        in_inventory = not inv.validate(_example_with_privileges([name.lower()]))
        canonical = sql.privilege_name(name)
        assert in_inventory == (canonical in sql.DB_PRIVILEGES), name
        assert sql.normalize_privileges([name]) == {canonical}
    # global privileges are the module's only
    assert inv.validate(_example_with_privileges(["SUPER"]))
    assert sql.normalize_privileges(["SUPER"]) == {"SUPER"}


def test_replica_spec_is_built_once_and_given_back_as_keywords():
    spec = _spec(ssl_cert="/tls/client.pem", ssl_key="/tls/client.key", master_port="3307", use_gtid="Slave_Pos")
    assert (spec.master_port, spec.use_gtid, spec.connect_retry) == (3307, "slave_pos", 10)
    assert spec.source_args() == {
        "master_host": "db1.example",
        "master_user": "repl",
        "master_password": "p'w\\d",
        "master_port": 3307,
        "ssl_ca": "/etc/mysql/tls/ca.pem",
        "ssl_cert": "/tls/client.pem",
        "ssl_key": "/tls/client.key",
    }
    assert set(spec.shown()) == set(sql.ReplicaSpec.SHOWN) and "master_password" not in spec.shown()
    assert spec.peer_connection(2) == {
        "connection_host": "db1.example",
        "connection_port": 3307,
        "connection_user": "repl",
        "connection_password": "p'w\\d",
        "connection_ssl_ca": "/etc/mysql/tls/ca.pem",
        "connection_ssl_cert": "/tls/client.pem",
        "connection_ssl_key": "/tls/client.key",
        "connection_connect_timeout": 2,
    }
    with pytest.raises(TypeError):
        sql.ReplicaSpec.validated(master_host="db1", master_user="repl", master_password="x", ssl_ca="/ca", port=1)
