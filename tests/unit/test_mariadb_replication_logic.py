"""
The pure logic of the mariadb_replication module: GTID positions, SQL quoting, REQUIRE clauses, grants as
SHOW GRANTS prints them, the status merge and the connection rules (the server side is exercised in
tests/functional/test_mariadb_replication.py).
"""

import importlib.util

import pymysql
import pytest
from salt.exceptions import SaltInvocationError

from tests.support.paths import REPO


def _load_module():
    spec = importlib.util.spec_from_file_location("mariadb_replication", REPO / "_modules" / "mariadb_replication.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mr = _load_module()


# --- GTID positions ------------------------------------------------------------------------------------


def test_parse_gtid_multi_domain():
    assert mr._parse_gtid("0-1-100,1-2-7") == {0: (1, 100), 1: (2, 7)}
    assert mr._parse_gtid(" 0-1-100 , 5-3-1 ") == {0: (1, 100), 5: (3, 1)}
    assert mr._parse_gtid("0-4294967295-18446744073709551615") == {0: (4294967295, 18446744073709551615)}


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_parse_gtid_empty(empty):
    assert mr._parse_gtid(empty) == {}


@pytest.mark.parametrize(
    "bad",
    ["0-1", "0-1-2-3", "a-1-2", "0-1-2,", ",0-1-2", "0-1-2,,1-1-1", "0--1-2", "-0-1-2", "0-1-2;1-1-1", "0-1-x"],
)
def test_parse_gtid_malformed(bad):
    with pytest.raises(SaltInvocationError, match="malformed GTID"):
        mr._parse_gtid(bad)


def test_parse_gtid_rejects_duplicates_ranges_and_types():
    with pytest.raises(SaltInvocationError, match="twice"):
        mr._parse_gtid("0-1-5,0-2-6")
    with pytest.raises(SaltInvocationError, match="out of range"):
        mr._parse_gtid("4294967296-1-1")
    with pytest.raises(SaltInvocationError, match="out of range"):
        mr._parse_gtid("0-1-18446744073709551616")
    with pytest.raises(SaltInvocationError):
        mr._parse_gtid(12)


def test_gtid_compare_is_the_one_order():
    # a fork (the same sequence number from two servers) is not "at least": the module once called it equal
    assert mr.gtid_compare("0-2-100", "0-1-100") is False
    assert mr.gtid_compare("0-1-100", "0-1-100") is True


def test_gtid_compare_malformed():
    with pytest.raises(SaltInvocationError):
        mr.gtid_compare("0-1-1", "zero")


def test_gtid_most_advanced():
    assert mr.gtid_most_advanced({"db2": "0-1-100", "db3": "0-1-98", "db4": "0-1-99"}) == ["db2"]
    assert mr.gtid_most_advanced({"db2": "0-1-100", "db3": "0-1-100"}) == ["db2", "db3"]
    assert mr.gtid_most_advanced({"db2": "0-1-100,1-1-1", "db3": "0-1-101"}) == []
    with pytest.raises(SaltInvocationError):
        mr.gtid_most_advanced({})


# --- SQL quoting -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "sql"),
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
def test_literal(value, sql):
    assert mr._literal(value) == sql


def test_literal_matches_pymysql_and_rejects_other_types():
    for value in ("x'y\"z\\", "%s", "ünïcode"):
        assert mr._literal(value) == pymysql.converters.escape_item(value, "utf8mb4")
    with pytest.raises(SaltInvocationError):
        mr._literal(1.5)


def test_quote_identifier():
    assert mr._quote_identifier("app") == "`app`"
    assert mr._quote_identifier("we`ird") == "`we``ird`"
    for bad in ("", "x" * 65, "nul\0", "trailing ", None, 5):
        with pytest.raises(SaltInvocationError):
            mr._quote_identifier(bad)


def test_account():
    assert mr._account("repl", "%") == "'repl'@'%'"
    assert mr._account("o'neil", "10.0.0.%") == "'o\\'neil'@'10.0.0.%'"
    for user, host in (("", "%"), ("repl", ""), (None, "%"), ("x" * 129, "%")):
        with pytest.raises(SaltInvocationError):
            mr._account(user, host)


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
    assert mr._normalize_require(given) == normalized
    assert mr._require_clause(normalized) == clause


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
        mr._normalize_require(bad)


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
    assert mr._require_from_row(row) == require


# --- privileges and grants -------------------------------------------------------------------------------


def test_normalize_privileges():
    assert mr._normalize_privileges("select, insert") == {"SELECT", "INSERT"}
    assert mr._normalize_privileges(["ALL"]) == {"ALL PRIVILEGES"}
    assert mr._normalize_privileges(["replication client", "Replica  Monitor", "REPLICATION SLAVE"]) == {
        "BINLOG MONITOR",
        "SLAVE MONITOR",
        "REPLICATION SLAVE",
    }
    for bad in (["SELECT", "DROP TABLE x"], [], "", [1], None):
        with pytest.raises(SaltInvocationError):
            mr._normalize_privileges(bad)


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
    assert mr._parse_grants(SHOW_GRANTS) == {
        "*.*": {"REPLICATION SLAVE", "BINLOG MONITOR", "READ_ONLY ADMIN"},
        "`a_b`.*": {"ALL PRIVILEGES"},
        "`we``ird`.*": {"SELECT", "INSERT"},
        "`mysql`.`user`": {"SELECT (`User`, `Host`)", "INSERT"},
        "`app`.`p`": {"EXECUTE"},
    }
    assert mr._parse_grants(["GRANT USAGE ON *.* TO `app`@`%`"]) == {"*.*": set()}


def test_grant_target_and_missing():
    assert mr._grant_target("*") == "*.*"
    assert mr._grant_target("we`ird") == "`we``ird`.*"
    assert mr._missing_privileges({"SELECT", "INSERT"}, {"SELECT"}) == {"INSERT"}
    assert mr._missing_privileges({"SELECT", "INSERT"}, {"ALL PRIVILEGES"}) == set()
    assert mr._missing_privileges({"USAGE"}, set()) == set()


# --- CHANGE MASTER ---------------------------------------------------------------------------------------


def _spec(**overrides):
    args = {
        "master_host": "db1.example",
        "master_user": "repl",
        "master_password": "p'w\\d",
        "ssl_ca": "/etc/mysql/tls/ca.pem",
    }
    args.update(overrides)
    return mr._replica_spec(**args)


def test_change_master_sql_quotes_every_value():
    sql = mr._change_master_sql(_spec(ssl_cert="/tls/client.pem", ssl_key="/tls/client.key", master_port="3307"))
    assert sql == (
        "CHANGE MASTER TO MASTER_HOST='db1.example', MASTER_PORT=3307, MASTER_USER='repl', "
        "MASTER_PASSWORD='p\\'w\\\\d', MASTER_CONNECT_RETRY=10, MASTER_SSL=1, MASTER_SSL_CA='/etc/mysql/tls/ca.pem', "
        "MASTER_SSL_CERT='/tls/client.pem', MASTER_SSL_KEY='/tls/client.key', MASTER_SSL_VERIFY_SERVER_CERT=1, "
        "MASTER_USE_GTID=slave_pos"
    )


def test_change_master_sql_clears_client_certificate():
    sql = mr._change_master_sql(_spec(ssl_verify=False, use_gtid="CURRENT_POS"))
    assert "MASTER_SSL_CERT='', MASTER_SSL_KEY=''" in sql
    assert "MASTER_SSL_VERIFY_SERVER_CERT=0, MASTER_USE_GTID=current_pos" in sql


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
    merged = mr._merge_status([], _variables(), STATUS_ROWS, 2)
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
    merged = mr._merge_status([named, REPLICA_ROW], _variables(read_only="ON", server_id="2"), STATUS_ROWS, 0)
    assert merged["role"] == "replica"
    assert merged["Master_Host"] == "127.0.0.1"  # the default connection, not "other"
    assert merged["Slave_IO_Running"] == "Yes"
    assert merged["Using_Gtid"] == "Slave_Pos"
    assert merged["replica_connections"] == ["", "other"]
    assert mr._merge_status([], _variables(read_only="ON"), [], 0)["role"] == "standalone"
    # a connection reset with RESET SLAVE ALL leaves no host: not a replica
    assert mr._merge_status([dict(REPLICA_ROW, Master_Host="")], _variables(), [], 0)["role"] == "primary"


def test_merge_status_missing_variables_are_none():
    merged = mr._merge_status([], [{"Variable_name": "read_only", "Value": "OFF"}], [], 0)
    assert merged["rpl_semi_sync_master_enabled"] is None
    assert merged["server_id"] is None
    assert merged["Rpl_semi_sync_master_clients"] is None


def test_replica_settings_and_lag_from_row():
    assert mr._replica_settings_from_row(REPLICA_ROW) == {
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
    assert mr._replica_settings_from_row(None) is None
    assert mr._lag_from_row(REPLICA_ROW)["replicating"] is True
    broken = dict(REPLICA_ROW, Slave_IO_Running="Connecting", Last_IO_Error="SSL error", Seconds_Behind_Master=None)
    assert mr._lag_from_row(broken) == {
        "configured": True,
        "io_running": False,
        "sql_running": True,
        "replicating": False,
        "seconds_behind_master": None,
        "last_io_error": "SSL error",
        "last_sql_error": None,
    }
    assert mr._lag_from_row({})["configured"] is False


# --- connections and option files ------------------------------------------------------------------------


def _settings(args, config=None):
    config = config or {}
    return mr._connection_settings(args, config.get)


def test_connection_defaults_to_debian_socket_as_root():
    settings, where = _settings({})
    assert settings["unix_socket"] == "/run/mysqld/mysqld.sock"
    assert settings["user"] == "root"
    assert "password" not in settings
    assert "host" not in settings
    assert "ssl_ca" not in settings
    assert where == "socket /run/mysqld/mysqld.sock"


def test_connection_config_host_with_tls():
    config = {"host": "db1.example", "port": "3307", "user": "salt", "password": "pw", "ssl_ca": "/ca.pem"}
    settings, where = _settings({}, config)
    assert (settings["host"], settings["port"], settings["user"], settings["password"]) == (
        "db1.example",
        3307,
        "salt",
        b"pw",
    )
    assert settings["ssl_ca"] == "/ca.pem"
    assert "ssl_cert" not in settings
    assert settings["ssl_verify_cert"] is True
    assert settings["ssl_verify_identity"] is True
    assert where == "db1.example:3307"


def test_connection_arguments_win_over_config():
    config = {"host": "db1.example", "user": "salt"}
    settings, _ = _settings({"unix_socket": "/tmp/my.sock"}, config)
    assert settings["unix_socket"] == "/tmp/my.sock"
    assert "host" not in settings
    assert settings["user"] == "salt"  # not given as an argument: from the config
    settings, _ = _settings({"host": "127.0.0.1", "ssl_ca": "/ca.pem"}, {"unix_socket": "/x.sock"})
    assert settings["host"] == "127.0.0.1"
    assert "unix_socket" not in settings
    settings, _ = _settings({"unix_socket": "/s", "ssl_ca": "/ca.pem"})
    assert "ssl_ca" not in settings  # TLS is for TCP connections
    assert settings["ssl_disabled"] is True


def test_connection_password_is_sent_as_utf8():
    settings, _ = _settings({"password": "pässword"})
    assert settings["password"] == "pässword".encode()
    assert mr.streaming.client_options(settings)["password"] == "pässword"


def test_connection_args_filter():
    assert mr._connection_args({"connection_user": "x", "__pub_fun": "y"}) == {"user": "x"}
    with pytest.raises(SaltInvocationError, match="connection_usr"):
        mr._connection_args({"connection_usr": "x"})
    with pytest.raises(SaltInvocationError, match="hots"):
        mr._connection_args({"hots": "x"})


def test_virtual_without_pymysql(monkeypatch):
    monkeypatch.setattr(mr, "HAS_PYMYSQL", False)
    ok, message = mr.__virtual__()
    assert ok is False
    assert message.endswith("PyMySQL is not installed")
    monkeypatch.setattr(mr, "HAS_PYMYSQL", True)
    assert mr.__virtual__() == "mariadb_replication"


def test_every_public_function_has_a_cli_example():
    public = [name for name, value in vars(mr).items() if callable(value) and not name.startswith("_")]
    public = [name for name in public if getattr(mr, name).__module__ == mr.__name__ and name != "MariaDBError"]
    assert "provision_replica" in public
    for name in public:
        assert "CLI Example:" in (getattr(mr, name).__doc__ or ""), name


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
    assert mr._health_problems(HEALTHY, 30) == []
    problems = mr._health_problems({**HEALTHY, **change}, 30)
    assert problems and any(word in problem for problem in problems), problems


def test_health_without_a_limit_ignores_lag():
    assert mr._health_problems({**HEALTHY, "seconds_behind_master": 10_000}, None) == []
