"""
The mariadb_replication module through the salt loader against real private mariadbd instances: a primary
and a replica replicating over verified TLS (certificates from tests/support/mariadb.py), the refusals
(wrong CA, clear text, accounts without a TLS requirement, writes on a read-only replica), and provisioning
an empty third instance from the primary with mariabackup (local pipe and TLS stream) and mysqldump.
"""

import socket
import ssl
import threading
import time
import types

import pymysql
import pytest
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

from tests.support.mariadb import source_args
from tests.support.services import free_port
from tests.support.services import wait_for

REPL_PASSWORD = "repl-pässword 'with' \"quotes\" \\ and #hash"
REPL_PASSWORD_BYTES = REPL_PASSWORD.encode()  # PyMySQL would send a str as latin1; the server hashed UTF-8
DUMP_PASSWORD = "dump-pw #1 'q' \"dq\" \\back"
APP_PASSWORD = "app-password"

# ---------------------------------------------------------------------------------------------------------
# fixtures (pki, instances and module_loaders: tests/functional/conftest.py) live for the module


@pytest.fixture(scope="module")
def primary(instances):
    return instances(1)


@pytest.fixture(scope="module")
def replica(instances):
    return instances(2, read_only=True)


@pytest.fixture(scope="module")
def mdb(module_loaders):
    """The module through a masterless minion's loaders."""
    return module_loaders.modules.mariadb_replication


def _replica_args(primary, pki, **overrides):
    return source_args(primary, pki, REPL_PASSWORD, **overrides)


@pytest.fixture(scope="module")
def replicating(mdb, primary, replica, pki):
    """The replication account on the primary, the replica replicating over verified TLS, an app table."""
    mdb.replication_user_present("repl", REPL_PASSWORD, require="X509", **primary.args)
    mdb.configure_replica(**_replica_args(primary, pki), **replica.args)
    mdb.database_present("app", **primary.args)
    primary.sql("CREATE TABLE IF NOT EXISTS app.items (id INT PRIMARY KEY, name VARCHAR(40))")
    mdb.start_replica(timeout=30, **replica.args)
    return primary, replica


def _sync(mdb, primary, replica, timeout=30):
    position = mdb.status(**primary.args)["gtid_binlog_pos"]
    assert mdb.wait_for_gtid(position, timeout=timeout, **replica.args) is True
    return position


def _wait_lag(mdb, instance, predicate, timeout=20):
    state = {}

    def check():
        state.update(mdb.lag(**instance.args))
        return predicate(state)

    wait_for(check, timeout, "the replica state")
    return state


# ---------------------------------------------------------------------------------------------------------
# tests


def test_status_before_replication(mdb, primary, replica):
    status = mdb.status(**primary.args)
    assert status["role"] == "primary"
    assert (status["server_id"], status["read_only"], status["log_bin"]) == (1, False, True)
    assert status["gtid_strict_mode"] is True
    assert status["binlog_format"] == "ROW"
    assert status["rpl_semi_sync_master_enabled"] is False
    assert status["rpl_semi_sync_slave_enabled"] is False
    assert status["rpl_semi_sync_master_wait_point"] == "AFTER_COMMIT"
    assert status["Rpl_semi_sync_master_clients"] == 0
    assert status["Rpl_semi_sync_master_status"] is False
    assert status["Slave_IO_Running"] is None
    assert status["Seconds_Behind_Master"] is None
    other = mdb.status(**replica.args)
    assert (other["role"], other["server_id"], other["read_only"]) == ("standalone", 2, True)
    assert mdb.replica_settings(**replica.args) is None
    assert mdb.lag(**replica.args)["configured"] is False


def test_replication_account_must_require_tls(mdb, primary):
    for require in (None, "NONE", ""):
        with pytest.raises(SaltInvocationError, match="must require TLS"):
            mdb.replication_user_present("repl_plain", "pw", require=require, **primary.args)
    assert mdb.replication_user_info("repl_plain", **primary.args) is None

    created = mdb.replication_user_present("repl_ssl", REPL_PASSWORD, host="127.0.0.1", **primary.args)
    assert created == {
        "changed": True,
        "changes": {
            "created": "repl_ssl@127.0.0.1",
            "require": {"old": None, "new": "SSL"},
            "granted": ["REPLICATION SLAVE"],
            "on": "*.*",
        },
    }
    again = mdb.replication_user_present("repl_ssl", REPL_PASSWORD, host="127.0.0.1", **primary.args)
    assert again == {"changed": False, "changes": {}}
    info = mdb.replication_user_info("repl_ssl", "127.0.0.1", password=REPL_PASSWORD, **primary.args)
    assert info["require"] == "SSL"
    assert info["replication"] is True
    assert info["tls_required"] is True
    assert info["password_matches"] is True
    assert info["grants"] == {"*.*": ["REPLICATION SLAVE"]}

    would = mdb.replication_user_present(
        "repl_ssl", "new password", host="127.0.0.1", require={"subject": "/CN=db-replica"}, test=True, **primary.args
    )
    assert would["changes"] == {"password": "changed", "require": {"old": "SSL", "new": {"subject": "/CN=db-replica"}}}
    assert mdb.replication_user_info("repl_ssl", "127.0.0.1", **primary.args)["require"] == "SSL"
    mdb.replication_user_present(
        "repl_ssl", "new password", host="127.0.0.1", require="SUBJECT '/CN=db-replica'", **primary.args
    )
    info = mdb.replication_user_info("repl_ssl", "127.0.0.1", password="new password", **primary.args)
    assert (info["require"], info["password_matches"]) == ({"subject": "/CN=db-replica"}, True)
    assert mdb.user_absent("repl_ssl", "127.0.0.1", **primary.args)["changed"] is True
    assert mdb.user_absent("repl_ssl", "127.0.0.1", **primary.args)["changed"] is False


def test_clear_text_login_of_replication_account_is_refused(replicating, pki):
    primary, _ = replicating
    with pytest.raises(pymysql.OperationalError) as err:
        pymysql.connect(
            host="127.0.0.1", port=primary.port, user="repl", password=REPL_PASSWORD_BYTES, ssl_disabled=True
        )
    assert err.value.args[0] == 1045
    # over TLS with the client certificate (REQUIRE X509) it logs in
    conn = pymysql.connect(
        host="127.0.0.1",
        port=primary.port,
        user="repl",
        password=REPL_PASSWORD_BYTES,
        ssl_ca=pki["good_ca"],
        ssl_cert=pki["client_cert"],
        ssl_key=pki["client_key"],
        ssl_verify_identity=True,
    )
    with conn.cursor() as cursor:
        cursor.execute("SHOW STATUS LIKE 'Ssl_version'")
        assert cursor.fetchone()[1].startswith("TLS")
    conn.close()
    # TLS without a client certificate does not satisfy REQUIRE X509
    with pytest.raises(pymysql.OperationalError) as err:
        pymysql.connect(
            host="127.0.0.1", port=primary.port, user="repl", password=REPL_PASSWORD_BYTES, ssl_ca=pki["good_ca"]
        )
    assert err.value.args[0] == 1045


def test_replicates_over_verified_tls(mdb, replicating, pki):
    primary, replica = replicating
    assert mdb.replica_settings(**replica.args) == {
        "master_host": "127.0.0.1",
        "master_port": primary.port,
        "master_user": "repl",
        "ssl": True,
        "ssl_ca": pki["good_ca"],
        "ssl_cert": pki["client_cert"],
        "ssl_key": pki["client_key"],
        "ssl_verify": True,
        "use_gtid": "slave_pos",
        "connect_retry": 1,
    }
    primary.sql("INSERT INTO app.items VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    position = _sync(mdb, primary, replica)
    assert replica.sql("SELECT id, name FROM app.items ORDER BY id") == ((1, "one"), (2, "two"), (3, "three"))

    status = mdb.status(**replica.args)
    assert status["role"] == "replica"
    assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")
    assert status["Master_SSL_Allowed"] == "Yes"
    assert status["Master_SSL_Verify_Server_Cert"] == "Yes"
    assert status["Master_SSL_CA_File"] == pki["good_ca"]
    assert status["Using_Gtid"] == "Slave_Pos"
    assert status["Seconds_Behind_Master"] == 0
    assert status["Last_IO_Error"] == ""
    assert mdb.gtid_compare(status["gtid_slave_pos"], position) is True
    assert status["read_only"] is True
    primary_status = mdb.status(**primary.args)
    assert primary_status["role"] == "primary"
    assert primary_status["binlog_dump_threads"] == 1
    lag = mdb.lag(**replica.args)
    assert (lag["replicating"], lag["seconds_behind_master"]) == (True, 0)
    assert mdb.lag(**primary.args)["seconds_behind_master"] is None


def test_wrong_ca_does_not_connect(mdb, replicating, pki):
    primary, replica = replicating
    try:
        mdb.configure_replica(**_replica_args(primary, pki, ssl_ca=pki["wrong_ca"]), **replica.args)
        state = _wait_lag(mdb, replica, lambda s: s["last_io_error"])
        assert state["io_running"] is False
        assert "SSL" in state["last_io_error"] or "certificate" in state["last_io_error"]
        with pytest.raises(CommandExecutionError, match="not running"):
            mdb.start_replica(timeout=2, **replica.args)
    finally:
        mdb.configure_replica(**_replica_args(primary, pki), **replica.args)
    assert mdb.start_replica(timeout=30, **replica.args)["replicating"] is True


def test_replica_without_tls_cannot_connect(mdb, replicating, pki):
    primary, replica = replicating
    with pytest.raises(SaltInvocationError, match="ssl_ca is required"):
        mdb.configure_replica(**_replica_args(primary, pki, ssl_ca=None), **replica.args)
    try:
        # what the module refuses to do, done by hand: a clear-text replica of a REQUIRE X509 account
        replica.sql("STOP SLAVE")
        replica.sql(
            "CHANGE MASTER TO MASTER_SSL=0, MASTER_SSL_CA='', MASTER_SSL_CERT='', MASTER_SSL_KEY='',"
            " MASTER_SSL_VERIFY_SERVER_CERT=0"
        )
        replica.sql("START SLAVE")
        state = _wait_lag(mdb, replica, lambda s: s["last_io_error"])
        assert state["io_running"] is False
        assert mdb.status(**replica.args)["Last_IO_Errno"] == 1045
    finally:
        mdb.configure_replica(**_replica_args(primary, pki), **replica.args)
    assert mdb.start_replica(timeout=30, **replica.args)["replicating"] is True


def test_read_only_refuses_application_writes(mdb, replicating):
    primary, replica = replicating
    assert mdb.user_present("app", APP_PASSWORD, **primary.args)["changed"] is True
    granted = mdb.grant_present("app", "%", "select,insert,update,delete", "app", **primary.args)
    assert granted == {
        "changed": True,
        "changes": {"granted": ["DELETE", "INSERT", "SELECT", "UPDATE"], "on": "`app`.*"},
    }
    assert mdb.grant_present("app", "%", ["SELECT"], "app", **primary.args)["changed"] is False
    _sync(mdb, primary, replica)

    def app(instance):
        return pymysql.connect(
            host="127.0.0.1", port=instance.port, user="app", password=APP_PASSWORD, database="app", autocommit=True
        )

    with app(primary) as conn, conn.cursor() as cursor:
        cursor.execute("INSERT INTO items VALUES (10, 'from app')")
    assert mdb.set_read_only(True, **replica.args) == {"read_only": True, "changed": False}
    assert mdb.set_read_only(False, **replica.args) == {"read_only": False, "changed": True}
    assert mdb.set_read_only(True, **replica.args) == {"read_only": True, "changed": True}
    with app(replica) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM items")  # the account replicated; reads work
        with pytest.raises(pymysql.OperationalError) as err:
            cursor.execute("INSERT INTO items VALUES (11, 'refused')")
    assert err.value.args[0] == 1290  # running with --read-only
    # MariaDB 10.11: SUPER does not pass read_only either (READ_ONLY ADMIN would)
    mdb.user_present("super_app", APP_PASSWORD, **primary.args)
    mdb.grant_present("super_app", "%", ["SUPER"], "*", **primary.args)
    mdb.grant_present("super_app", "%", ["INSERT"], "app", **primary.args)
    _sync(mdb, primary, replica)
    conn = pymysql.connect(host="127.0.0.1", port=replica.port, user="super_app", password=APP_PASSWORD, database="app")
    with conn, conn.cursor() as cursor, pytest.raises(pymysql.OperationalError) as err:
        cursor.execute("INSERT INTO items VALUES (12, 'refused too')")
    assert err.value.args[0] == 1290
    # the replica still applies what the primary writes
    _sync(mdb, primary, replica)
    assert replica.sql("SELECT name FROM app.items WHERE id = 10") == (("from app",),)
    with pytest.raises(SaltInvocationError):
        mdb.set_read_only("yes", **replica.args)


def test_wait_for_gtid(mdb, replicating):
    _, replica = replicating
    started = time.monotonic()
    with pytest.raises(CommandExecutionError, match="timed out after 1s waiting for GTID position 0-1-999999"):
        mdb.wait_for_gtid("0-1-999999", timeout=1, **replica.args)
    assert time.monotonic() - started < 10
    with pytest.raises(SaltInvocationError, match="malformed GTID"):
        mdb.wait_for_gtid("0-1", **replica.args)
    assert mdb.wait_for_gtid("", timeout=1, **replica.args) is True


def test_kill_client_connections_spares_replication(mdb, replicating):
    primary, replica = replicating
    client = pymysql.connect(host="127.0.0.1", port=primary.port, user="app", password=APP_PASSWORD, autocommit=True)
    with client.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        client_id = cursor.fetchone()[0]
    killed = mdb.kill_client_connections(exclude_users=["nobody"], **primary.args)
    assert client_id in [entry["id"] for entry in killed]
    assert all(entry["command"] not in ("Binlog Dump", "Binlog Dump GTID") for entry in killed)
    with pytest.raises(pymysql.OperationalError), client.cursor() as cursor:
        cursor.execute("SELECT 1")
    client.close()
    assert mdb.status(**primary.args)["binlog_dump_threads"] == 1
    primary.sql("INSERT INTO app.items VALUES (20, 'after kill')")
    _sync(mdb, primary, replica)
    assert mdb.lag(**replica.args)["replicating"] is True


def test_databases_and_grants(mdb, primary):
    assert mdb.database_present("shop", **primary.args) == {"changed": True, "changes": {"created": "shop"}}
    assert mdb.database_present("shop", **primary.args)["changed"] is False
    changed = mdb.database_present("shop", character_set="latin1", test=True, **primary.args)
    assert changed["changes"] == {"character_set": {"old": "utf8mb4", "new": "latin1"}}
    changed = mdb.database_present("shop", collate="utf8mb4_bin", **primary.args)
    assert changed["changes"] == {"collate": {"old": "utf8mb4_general_ci", "new": "utf8mb4_bin"}}
    assert mdb.database_absent("shop", test=True, **primary.args)["changed"] is True
    assert mdb.database_absent("shop", **primary.args) == {"changed": True, "changes": {"deleted": "shop"}}
    assert mdb.database_absent("shop", **primary.args)["changed"] is False
    with pytest.raises(SaltInvocationError, match="system database"):
        mdb.database_absent("mysql", **primary.args)
    with pytest.raises(SaltInvocationError):
        mdb.database_present("bad name ", **primary.args)

    weird = "we`ird'db"
    assert mdb.database_present(weird, **primary.args)["changed"] is True
    assert mdb.user_present("o'neil", "pw'1", host="10.0.0.%", require="SSL", **primary.args)["changed"] is True
    assert mdb.grant_present("o'neil", "10.0.0.%", ["ALL"], weird, **primary.args)["changed"] is True
    info = mdb.user_info("o'neil", "10.0.0.%", password="pw'1", **primary.args)
    assert info["grants"] == {"*.*": [], "`we``ird'db`.*": ["ALL PRIVILEGES"]}
    assert info["password_matches"] is True
    assert mdb.grant_present("o'neil", "10.0.0.%", ["SELECT"], weird, **primary.args)["changed"] is False
    assert mdb.user_present("o'neil", "pw'1", host="10.0.0.%", **primary.args)["changes"] == {
        "require": {"old": "SSL", "new": None}
    }
    mdb.user_absent("o'neil", "10.0.0.%", **primary.args)
    mdb.database_absent(weird, **primary.args)


def test_errors_carry_the_server_code(mdb, primary, test_root):
    with pytest.raises(CommandExecutionError) as err:
        mdb.grant_present("ghost", "%", ["SELECT"], "app", **primary.args)
    assert "does not exist" in str(err.value)
    with pytest.raises(CommandExecutionError) as err:
        mdb.status(connection_unix_socket=str(primary.server.socket), connection_user="ghost")
    assert err.value.errno in (1045, 1698)
    assert "Access denied" in str(err.value)
    assert "Traceback" not in str(err.value)
    with pytest.raises(CommandExecutionError, match="cannot connect to MariaDB") as err:
        mdb.status(connection_unix_socket=str(test_root / "missing.sock"))
    assert err.value.errno == 2003
    with pytest.raises(CommandExecutionError) as err:
        mdb.user_info("root", "localhost", connection_host="127.0.0.1", connection_port=primary.port)
    assert err.value.errno == 1698  # root logs in over the socket only
    with pytest.raises(CommandExecutionError) as err:
        mdb.database_present("cs_test", character_set="nonexistent_cs", **primary.args)
    assert err.value.errno == 1115  # unknown character set, from the server
    with pytest.raises(SaltInvocationError, match="connection_sockt"):
        mdb.status(connection_sockt="/x")


def test_tls_admin_connection_over_tcp(mdb, primary, pki):
    mdb.user_present("salt_admin", "admin-pw-ü", host="127.0.0.1", require="SSL", **primary.args)
    mdb.grant_present("salt_admin", "127.0.0.1", ["SLAVE MONITOR", "BINLOG MONITOR", "PROCESS"], "*", **primary.args)
    tcp = {
        "connection_host": "127.0.0.1",
        "connection_port": primary.port,
        "connection_user": "salt_admin",
        "connection_password": "admin-pw-ü",
        "connection_ssl_ca": pki["good_ca"],
    }
    assert mdb.status(**tcp)["server_id"] == 1
    with pytest.raises(CommandExecutionError, match="cannot connect"):
        mdb.status(**dict(tcp, connection_ssl_ca=pki["wrong_ca"]))
    with pytest.raises(CommandExecutionError) as err:
        mdb.status(**dict(tcp, connection_password="wrong"))
    assert err.value.errno == 1045
    mdb.user_absent("salt_admin", "127.0.0.1", **primary.args)


def _serve_in_background(mdb, instance, pki, port, **options):
    outcome = {}

    def run():
        try:
            outcome["result"] = mdb.serve_backup_stream(
                port,
                options.pop("allow", "127.0.0.1"),
                pki["server_cert"],
                pki["server_key"],
                pki["good_ca"],
                bind="127.0.0.1",
                **options,
                **instance.args,
            )
        except Exception as err:  # handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: _listening(port) or not thread.is_alive(), 10, "serve_backup_stream to listen")
    return thread, outcome


def _listening(port):
    """Whether something listens on 127.0.0.1:port, without connecting (that would use up the one accept)."""
    with open("/proc/net/tcp") as table:
        return any(
            line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A" for line in table.readlines()[1:]
        )


def test_backup_stream_refuses_strangers(mdb, primary, pki):
    port = free_port()
    thread, outcome = _serve_in_background(mdb, primary, pki, port, timeout=3)
    # from another loopback address: closed without a word
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.2", 0))
        stranger.connect(("127.0.0.1", port))
        stranger.settimeout(5)
        assert stranger.recv(16) == b""
    # from the allowed address but with a certificate of another CA: the handshake fails
    context = ssl.create_default_context(cafile=pki["good_ca"])
    context.load_cert_chain(pki["wrong_client_cert"], pki["wrong_client_key"])
    raw = socket.create_connection(("127.0.0.1", port))
    with pytest.raises((ssl.SSLError, ConnectionError)), context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.settimeout(5)
        tls.recv(16)
    raw.close()
    thread.join(15)
    assert isinstance(outcome.get("error"), CommandExecutionError)
    assert "no connection from 127.0.0.1 within 3s (refused ['127.0.0.2', '127.0.0.1'])" in str(outcome["error"])


@pytest.fixture
def dump_account(mdb, replicating):
    primary, _ = replicating
    mdb.user_present("provisioner", DUMP_PASSWORD, host="%", require="SSL", **primary.args)
    # what mariadb-dump --single-transaction --master-data --gtid --routines --events --triggers needs in 10.11
    privileges = ["SELECT", "SHOW VIEW", "TRIGGER", "EVENT", "BINLOG MONITOR"]
    mdb.grant_present("provisioner", "%", privileges, "*", **primary.args)
    return "provisioner"


@pytest.mark.parametrize("method", ["mariabackup-local", "mariabackup-stream", "mysqldump"])
def test_provision_empty_replica(mdb, replicating, instances, pki, dump_account, method):
    primary, _ = replicating
    primary.sql("INSERT INTO app.items VALUES (%s, %s)", (100 + len(method), f"before {method}"))
    target = instances(10 + len(method), read_only=True)
    command = " ".join(target.server.command())
    args = _replica_args(primary, pki)
    args.pop("connect_retry")
    if method == "mysqldump":
        options = {"method": "mysqldump", "dump_user": dump_account, "dump_password": DUMP_PASSWORD}
    elif method == "mariabackup-local":
        options = {"source_socket": str(primary.server.socket)}
    else:
        options = {"stream_port": free_port()}
    if method.startswith("mariabackup"):
        options.update(service=None, start_command=command, overwrite_fresh=True)
        with pytest.raises(CommandExecutionError, match="overwrite_fresh=True"):
            mdb.provision_replica(**args, **dict(options, overwrite_fresh=False), **target.args)
    thread = outcome = None
    if method == "mariabackup-stream":
        thread, outcome = _serve_in_background(mdb, primary, pki, options["stream_port"], timeout=60)

    started = time.monotonic()
    result = mdb.provision_replica(**args, **options, **target.args)
    took = time.monotonic() - started
    target.adopted_pid = result["pid"]
    if thread:
        thread.join(30)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["result"]["peer"] == "127.0.0.1"
        assert outcome["result"]["gtid"] == result["gtid_slave_pos"]

    assert result["replica"]["replicating"] is True, result
    if method.startswith("mariabackup"):
        assert result["moved_aside"].startswith(str(target.server.datadir) + ".pre-provision-")
        assert result["pid"]
    _sync(mdb, primary, target)
    assert target.sql("SELECT name FROM app.items WHERE id = %s", (100 + len(method),)) == ((f"before {method}",),)
    primary.sql("INSERT INTO app.items VALUES (%s, %s)", (200 + len(method), f"after {method}"))
    _sync(mdb, primary, target)
    assert target.sql("SELECT COUNT(*) FROM app.items") == primary.sql("SELECT COUNT(*) FROM app.items")
    status = mdb.status(**target.args)
    assert (status["role"], status["Master_SSL_Verify_Server_Cert"], status["Using_Gtid"]) == (
        "replica",
        "Yes",
        "Slave_Pos",
    )
    # provisioning twice is refused: the server holds data now
    with pytest.raises(CommandExecutionError, match="refusing"):
        mdb.provision_replica(**args, **options, **target.args)
    print(f"provision_replica {method}: {took:.1f}s")


def test_provision_failure_then_retry(mdb, replicating, instances, pki):
    primary, _ = replicating
    target = instances(30, read_only=True)
    args = _replica_args(primary, pki)
    options = {"service": None, "start_command": " ".join(target.server.command()), "overwrite_fresh": True}
    # the source's backup fails after the handshake (its mariabackup cannot reach its server): the server is left
    # stopped, the fresh data directory moved aside, and said so
    port = free_port()
    broken = types.SimpleNamespace(args={"connection_unix_socket": str(target.server.root / "no-such.sock")})
    thread, outcome = _serve_in_background(mdb, broken, pki, port, timeout=30)
    with pytest.raises(CommandExecutionError, match="the source's backup failed") as err:
        mdb.provision_replica(**args, **options, stream_port=port, timeout=30, **target.args)
    thread.join(30)
    assert "mariabackup exited with" in str(outcome.get("error")), outcome
    assert "is incomplete and the server is stopped; the previous data directory is" in str(err.value)
    assert not list(target.server.datadir.iterdir())
    # with the server down its data directory must be given, never guessed (overwrite_fresh=False keeps this
    # harmless even if that rule broke)
    with pytest.raises(SaltInvocationError, match="give its datadir explicitly"):
        mdb.provision_replica(
            **args, **dict(options, overwrite_fresh=False), source_socket=str(primary.server.socket), **target.args
        )
    # the empty data directory is taken as it is on the next attempt
    result = mdb.provision_replica(
        **args,
        **options,
        source_socket=str(primary.server.socket),
        datadir=str(target.server.datadir),
        **target.args,
    )
    target.adopted_pid = result["pid"]
    assert result["moved_aside"] is None
    assert result["replica"]["replicating"] is True
    _sync(mdb, primary, target)
