"""
The MariaDB server side of ``mariadb_replication`` (no Salt dunders): how ``connection_*`` arguments and the
minion's ``mariadb.*`` configuration become PyMySQL settings, connecting and running statements (server errors as
CommandExecutionError), and the statements each execution function runs on an open connection. The execution
module resolves the settings (it reads the configuration) and passes them, or the connection, in.
"""

import contextlib
import os
import shlex
import subprocess
import time

import rolestack_gtid as gtid
import rolestack_highstate as highstate
import rolestack_mariadb_sql as sql
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

try:
    import pymysql

    # bound now: once salt's mysql module loads (pymysql.install_as_MySQLdb()), the attribute pymysql.cursors is a
    # second copy whose errors ``except pymysql.MySQLError`` does not catch
    from pymysql.cursors import DictCursor
except ImportError:  # the execution module's __virtual__ refuses to load without it
    pymysql = DictCursor = None

DEFAULT_SOCKET = "/run/mysqld/mysqld.sock"
CONNECTION_KEYS = (
    "unix_socket",
    "host",
    "port",
    "user",
    "password",
    "ssl_ca",
    "ssl_cert",
    "ssl_key",
    "connect_timeout",
)


class MariaDBError(CommandExecutionError):
    """A failure reported by the server (or the connection to it): ``errno`` and ``server_message``."""

    def __init__(self, message, errno=None, server_message=None):
        super().__init__(message)
        self.errno = errno
        self.server_message = server_message


class Unreachable(MariaDBError):
    """The server could not be reached at all (down, no socket, refused the connection or the login)."""


# ---- connecting


def connection_args(kwargs):
    """The ``connection_*`` keywords (prefix removed); Salt's ``__pub_*`` keywords are ignored."""
    args = {}
    for key, value in kwargs.items():
        if key.startswith("__"):
            continue
        name = key[len("connection_") :] if key.startswith("connection_") else None
        if name not in CONNECTION_KEYS:
            raise SaltInvocationError(f"unexpected keyword argument {key!r}")
        args[name] = value
    return args


def connection_settings(args, lookup):
    """
    The PyMySQL connect() keywords for ``connection_*`` arguments (without the prefix) and a config
    ``lookup(name)``, and where they connect to (for messages); see the execution module's documentation for the
    rules.
    """

    def given(name):
        value = args.get(name)
        return None if value in (None, "") else value

    def configured(name):
        value = lookup(name)
        return None if value in (None, "") else value

    if given("unix_socket") or given("host"):
        sock, host = given("unix_socket"), given("host")
    else:
        sock, host = configured("unix_socket"), configured("host")
        if not sock and not host:
            sock = DEFAULT_SOCKET

    def pick(name, default=None):
        value = given(name)
        if value is None:
            value = configured(name)
        return default if value is None else value

    settings = {
        "user": pick("user", "root"),
        "connect_timeout": int(pick("connect_timeout", 10)),
        "charset": "utf8mb4",
        "autocommit": True,
        "cursorclass": DictCursor,
    }
    password = pick("password")
    if password is not None:
        # UTF-8 bytes, as the mariadb client sends them (PyMySQL would encode a str as latin1)
        settings["password"] = str(password).encode("utf-8")
    if sock:
        settings["unix_socket"] = str(sock)
        settings["ssl_disabled"] = True
        return settings, f"socket {sock}"
    settings["host"] = str(host)
    settings["port"] = sql.validate_port(pick("port", 3306), "connection_port")
    # PyMySQL's individual ssl_* keywords (its ``ssl`` dict is dropped when ssl_verify_* are given)
    for name in ("ssl_ca", "ssl_cert", "ssl_key"):
        if pick(name):
            settings[name] = str(pick(name))
    if "ssl_ca" in settings:
        settings["ssl_verify_cert"] = True
        settings["ssl_verify_identity"] = True
    return settings, f"{host}:{settings['port']}"


def server_error(err, doing=None):
    """A PyMySQL error as MariaDBError, its code and message kept."""
    if len(err.args) >= 2 and isinstance(err.args[0], int):
        code, message = err.args[0], str(err.args[1])
    else:
        code, message = None, str(err) or type(err).__name__
    prefix = f"{doing}: " if doing else ""
    return MariaDBError(f"{prefix}MariaDB error {code}: {message}", errno=code, server_message=message)


@contextlib.contextmanager
def connect(settings, where):
    """Connect with PyMySQL ``settings`` (``connection_settings``); MariaDB errors inside become MariaDBError."""
    try:
        conn = pymysql.connect(**settings)
    except pymysql.MySQLError as err:
        error = server_error(err, f"cannot connect to MariaDB ({where})")
        raise Unreachable(str(error), error.errno, error.server_message) from err
    except (OSError, ValueError) as err:
        raise Unreachable(f"cannot connect to MariaDB ({where}): {err}") from err
    try:
        yield conn
    except pymysql.MySQLError as err:
        raise server_error(err) from err
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def query(conn, statement, args=None, doing=None):
    """Run one statement; the rows as dicts. ``doing`` names it in errors (never put secrets there)."""
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, args)
            return list(cursor.fetchall())
    except pymysql.MySQLError as err:
        raise server_error(err, doing or statement.split(" ", 2)[0]) from err


def value(conn, expression, doing):
    """The value of one ``SELECT <expression> AS v``."""
    return query(conn, f"SELECT {expression} AS v", (), doing)[0]["v"]


def server_up(settings, where):
    try:
        with connect(settings, where) as conn:
            query(conn, "SELECT 1")
        return True
    except CommandExecutionError:
        return False


# ---- replication state and control


def replica_rows(conn):
    return query(conn, "SHOW ALL SLAVES STATUS", doing="SHOW ALL SLAVES STATUS")


def replica_row(conn):
    """The default replication connection's SHOW SLAVE STATUS row, or None."""
    return sql.default_connection(replica_rows(conn))


def read_status(conn):
    """``status()``: the replica rows, the variables, the semi-sync status and the binlog dump threads, merged."""
    names = sql.BOOL_VARIABLES + sql.INT_VARIABLES + sql.TEXT_VARIABLES
    status_names = tuple(sql.STATUS_VARIABLES)
    rows = replica_rows(conn)
    variables = query(
        conn,
        f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({', '.join(['%s'] * len(names))})",
        names,
        "SHOW GLOBAL VARIABLES",
    )
    status_rows = query(
        conn,
        f"SHOW GLOBAL STATUS WHERE Variable_name IN ({', '.join(['%s'] * len(status_names))})",
        status_names,
        "SHOW GLOBAL STATUS",
    )
    dumps = query(
        conn,
        "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%%'",
        (),
        "counting binlog dump threads",
    )[0]["n"]
    return sql.merge_status(rows, variables, status_rows, dumps)


def gtid_state(conn, what):
    """A server's ``gtid_binlog_state``, ``gtid_binlog_pos``, ``gtid_slave_pos`` and ``read_only``."""
    row = query(
        conn,
        "SELECT @@GLOBAL.gtid_binlog_state AS state, @@GLOBAL.gtid_binlog_pos AS pos, "
        "@@GLOBAL.gtid_slave_pos AS slave, @@GLOBAL.read_only AS ro",
        (),
        f"reading the GTID state of {what}",
    )[0]
    return {
        "gtid_binlog_state": row["state"] or "",
        "gtid_binlog_pos": row["pos"] or "",
        "gtid_slave_pos": row["slave"] or "",
        "read_only": bool(row["ro"]),
    }


def wait_for_gtid(conn, position, timeout):
    """MASTER_GTID_WAIT for ``position``: True, or CommandExecutionError naming where the replica stands."""
    result = query(conn, "SELECT MASTER_GTID_WAIT(%s, %s) AS r", (position, timeout), "MASTER_GTID_WAIT")[0]["r"]
    if result == 0:
        return True
    now = value(conn, "@@gtid_slave_pos", "reading gtid_slave_pos")
    if result == -1:
        raise CommandExecutionError(
            f"timed out after {timeout:g}s waiting for GTID position {position} (gtid_slave_pos is {now!r})"
        )
    raise CommandExecutionError(f"MASTER_GTID_WAIT({position!r}) returned {result!r}")


def check_replica_files(settings, spec):
    """Over the socket (on the server's host) the replica's TLS files must exist: the server reads them."""
    if "unix_socket" in settings:
        for name in ("ssl_ca", "ssl_cert", "ssl_key"):
            path = getattr(spec, name)
            if path and not os.path.isfile(path):
                raise SaltInvocationError(f"{name} {path} does not exist")


def point_at(conn, spec, start, slave_pos_from_binlog):
    """STOP SLAVE, CHANGE MASTER to ``spec`` (and START SLAVE with ``start``); the new replica settings."""
    query(conn, "STOP SLAVE", doing="STOP SLAVE")
    if slave_pos_from_binlog:
        # an old primary continues after its own last transaction; one that wrote none (promoted right after
        # it was restored by mariabackup, then demoted) after what it applied: its binary log may be empty
        row = query(
            conn,
            "SELECT @@GLOBAL.gtid_binlog_pos AS binlog, @@GLOBAL.gtid_slave_pos AS slave",
            (),
            "reading the GTID positions",
        )[0]
        resume = gtid.resume_position(row["binlog"] or "", row["slave"] or "")
        query(conn, "SET GLOBAL gtid_slave_pos = %s", (resume,), doing="SET GLOBAL gtid_slave_pos")
    query(conn, sql.change_master_sql(spec, conn.literal), doing="CHANGE MASTER TO")
    if start:
        query(conn, "START SLAVE", doing="START SLAVE")
    return sql.replica_settings_from_row(replica_row(conn))


def start_replica(conn, timeout):
    """START SLAVE, then wait up to ``timeout`` seconds for both threads; the lag row (``lag_from_row``)."""
    deadline = time.monotonic() + float(timeout or 0)
    if not sql.replica_configured(replica_row(conn)):
        raise CommandExecutionError("no source is configured: use configure_replica first")
    query(conn, "START SLAVE", doing="START SLAVE")
    while True:
        state = sql.lag_from_row(replica_row(conn) or {})
        if state["replicating"] or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if timeout and not state["replicating"]:
        raise CommandExecutionError(
            f"the replica threads are not running after {timeout}s: "
            f"IO error: {state['last_io_error'] or 'none'}; SQL error: {state['last_sql_error'] or 'none'}"
        )
    return state


def set_read_only(conn, enabled, lock_wait_timeout):
    """``read_only`` to ``enabled``, waiting at most ``lock_wait_timeout`` seconds for locks; whether it changed."""
    before = bool(value(conn, "@@GLOBAL.read_only", "reading read_only"))
    if before != enabled:
        query(conn, f"SET SESSION lock_wait_timeout = {lock_wait_timeout}", doing="SET lock_wait_timeout")
        query(conn, f"SET GLOBAL read_only = {1 if enabled else 0}", doing="SET GLOBAL read_only")
    return before != enabled


def kill_clients(conn, exclude_users):
    """Kill every client connection but replication and system threads, this one and ``exclude_users``."""
    killed = []
    rows = query(
        conn,
        "SELECT ID, USER, HOST, DB, COMMAND, CONNECTION_ID() AS me FROM information_schema.PROCESSLIST",
        (),
        "reading the process list",
    )
    for row in rows:
        if (
            row["ID"] == row["me"]
            or row["COMMAND"] in sql.REPLICATION_COMMANDS
            or row["COMMAND"] == "Daemon"
            or row["USER"] in sql.SYSTEM_USERS
            or row["USER"] in exclude_users
        ):
            continue
        try:
            query(conn, f"KILL CONNECTION {int(row['ID'])}", doing=f"KILL CONNECTION {row['ID']}")
        except MariaDBError as err:
            if err.errno == 1094:  # unknown thread id: it has gone already
                continue
            raise
        killed.append(
            {"id": row["ID"], "user": row["USER"], "host": row["HOST"], "db": row["DB"], "command": row["COMMAND"]}
        )
    return killed


# ---- accounts, grants, databases


def user_row(conn, user, host):
    rows = query(
        conn,
        "SELECT ssl_type, ssl_cipher, x509_issuer, x509_subject, plugin, authentication_string"
        " FROM mysql.user WHERE User = %s AND Host = %s",
        (user, host),
        f"reading account {user}@{host}",
    )
    return rows[0] if rows else None


def grants(conn, user, host):
    rows = query(conn, "SHOW GRANTS FOR %s@%s", (user, host), f"SHOW GRANTS FOR {user}@{host}")
    return sql.parse_grants(next(iter(row.values())) for row in rows)


def password_matches(conn, row, password):
    if row["plugin"] not in ("mysql_native_password", "") or not row["authentication_string"]:
        return False
    hashed = query(conn, "SELECT PASSWORD(%s) AS h", (password,), "hashing the password")[0]["h"]
    return hashed == row["authentication_string"]


def user_info(conn, user, host, password):
    """``user_info()`` of an account, or None when it does not exist."""
    row = user_row(conn, user, host)
    if row is None:
        return None
    return {
        "user": user,
        "host": host,
        "require": sql.require_from_row(row),
        "plugin": row["plugin"],
        "grants": {on: sorted(privs) for on, privs in grants(conn, user, host).items()},
        "password_matches": None if password is None else password_matches(conn, row, password),
    }


def drop_user(conn, user, host, test):
    """Drop ``user@host`` unless test; whether it existed."""
    if user_row(conn, user, host) is None:
        return False
    if not test:
        query(conn, f"DROP USER {sql.account(user, host, conn.literal)}", doing=f"DROP USER {user}@{host}")
    return True


def user_hosts(conn, user):
    """The hosts of every account named ``user``, sorted."""
    rows = query(conn, "SELECT Host FROM mysql.user WHERE User = %s", (user,), f"listing the accounts of {user}")
    return sorted(sql.as_text(row["Host"]) for row in rows)


def ensure_user(conn, user, host, password, wanted, test):
    """The changes making ``user@host`` exist with ``password`` and TLS requirement ``wanted``; made unless test."""
    changes = {}
    account = sql.account(user, host, conn.literal)
    row = user_row(conn, user, host)
    if row is None:
        changes["created"] = f"{user}@{host}"
        if wanted is not None:
            changes["require"] = {"old": None, "new": wanted}
        if not test:
            query(
                conn,
                f"CREATE USER {account} IDENTIFIED BY {conn.literal(password)} "
                + sql.require_clause(wanted, conn.literal),
                doing=f"CREATE USER {user}@{host}",
            )
        return changes
    if not password_matches(conn, row, password):
        changes["password"] = "changed"
        if not test:
            query(
                conn,
                f"ALTER USER {account} IDENTIFIED BY {conn.literal(password)}",
                doing=f"ALTER USER {user}@{host} IDENTIFIED BY",
            )
    current = sql.require_from_row(row)
    if current != wanted:
        changes["require"] = {"old": current, "new": wanted}
        if not test:
            query(
                conn,
                f"ALTER USER {account} {sql.require_clause(wanted, conn.literal)}",
                doing=f"ALTER USER {user}@{host} REQUIRE",
            )
    return changes


def ensure_grants(conn, user, host, wanted, target, exact, test):
    """The changes making ``user@host`` hold ``wanted`` on ``target`` (only them with ``exact``); made unless test."""
    if user_row(conn, user, host) is None:
        raise CommandExecutionError(f"account {user}@{host} does not exist")
    held = grants(conn, user, host).get(target, set())
    extra = sql.extra_privileges(wanted, held) if exact else set()
    # ALL PRIVILEGES held beyond what is wanted: revoke it all, then grant what is wanted
    missing = set(wanted) - {"USAGE"} if "ALL PRIVILEGES" in extra else sql.missing_privileges(wanted, held)
    account = sql.account(user, host, conn.literal)
    changes = {}
    for key, verb, preposition, names in (("revoked", "REVOKE", "FROM", extra), ("granted", "GRANT", "TO", missing)):
        if names:
            changes[key] = sorted(names)
            if not test:
                query(
                    conn,
                    f"{verb} {', '.join(sorted(names))} ON {target} {preposition} {account}",
                    doing=f"{verb} ON {target} {preposition} {user}@{host}",
                )
    return changes


def ensure_database(conn, name, character_set, collate, test):
    """The changes making database ``name`` exist with this character set (and collation); made unless test."""
    quoted = sql.quote_identifier(name)
    clause = f"CHARACTER SET {character_set}" + (f" COLLATE {collate}" if collate else "")
    rows = query(
        conn,
        "SELECT DEFAULT_CHARACTER_SET_NAME AS cs, DEFAULT_COLLATION_NAME AS co"
        " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
        (name,),
        f"reading database {name}",
    )
    if not rows:
        if not test:
            query(conn, f"CREATE DATABASE {quoted} {clause}", doing=f"CREATE DATABASE {name}")
        return {"created": name}
    current = rows[0]
    changes = {}
    if current["cs"].lower() != character_set.lower():
        changes["character_set"] = {"old": current["cs"], "new": character_set}
    if collate and current["co"].lower() != collate.lower():
        changes["collate"] = {"old": current["co"], "new": collate}
    if changes and not test:
        query(conn, f"ALTER DATABASE {quoted} {clause}", doing=f"ALTER DATABASE {name}")
    return changes


def drop_database(conn, name, test):
    """Drop database ``name`` unless test; whether it existed."""
    exists = query(conn, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,), f"reading {name}")
    if exists and not test:
        query(conn, f"DROP DATABASE {sql.quote_identifier(name)}", doing=f"DROP DATABASE {name}")
    return bool(exists)


# ---- the local server, for provisioning


def refuse_data(conn):
    """Refuse a running server that holds databases or replicates already."""
    databases = [next(iter(row.values())) for row in query(conn, "SHOW DATABASES", doing="SHOW DATABASES")]
    row = replica_row(conn)
    busy = []
    for name in databases:
        if name.lower() in sql.SYSTEM_DATABASES:
            continue
        tables = query(
            conn,
            "SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
            (name,),
            f"counting tables of {name}",
        )[0]["n"]
        if name != "test" or tables:
            busy.append(name)
    if busy:
        raise CommandExecutionError(f"the server holds databases {sorted(busy)}: refusing to provision over data")
    if sql.replica_configured(row):
        raise CommandExecutionError(f"the server replicates from {row['Master_Host']} already: refusing")


def wait_until(predicate, timeout, what):
    """The one wait (``rolestack_highstate.wait_for``), every 0.2 s, failing as an execution function does."""
    highstate.wait_for(predicate, timeout, what, interval=0.2, error=CommandExecutionError)


def stop_server(settings, where, service, service_stop, timeout):
    """
    Stop the local server: ``service_stop(service)`` (salt's ``service.stop``) when a service is named, else SQL
    SHUTDOWN (then wait for its pid file to go).
    """
    if service:
        if not service_stop(service):
            raise CommandExecutionError(f"could not stop service {service}")
        wait_until(lambda: not server_up(settings, where), timeout, f"service {service} to stop")
        return
    if not server_up(settings, where):
        return
    with connect(settings, where) as conn:
        row = query(conn, "SELECT @@pid_file AS pid_file, @@datadir AS datadir", (), "reading pid_file")[0]
        pid_file = os.path.join(row["datadir"], row["pid_file"])
        with contextlib.suppress(pymysql.MySQLError, CommandExecutionError):
            query(conn, "SHUTDOWN", doing="SHUTDOWN")
    wait_until(lambda: not os.path.exists(pid_file) and not server_up(settings, where), timeout, "the server to stop")


def start_server(settings, where, service, service_start, start_command, timeout):
    """
    Start the local server: ``service_start(service)`` (salt's ``service.start``) when a service is named, else
    ``start_command`` in the background; the started process id or None.
    """
    if service:
        if not service_start(service):
            raise CommandExecutionError(f"could not start service {service}")
        wait_until(lambda: server_up(settings, where), timeout, f"service {service} to start")
        return None
    command = shlex.split(start_command) if isinstance(start_command, str) else list(start_command)
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )

    def up():
        if process.poll() is not None:
            raise CommandExecutionError(f"{command[0]} exited with {process.returncode} while starting")
        return server_up(settings, where)

    wait_until(up, timeout, "the server to start")
    return process.pid


def forget_source(conn, slave_pos):
    """A restored server: no replication source, and ``gtid_slave_pos`` where its backup stands."""
    query(conn, "STOP SLAVE", doing="STOP SLAVE")
    query(conn, "RESET SLAVE ALL", doing="RESET SLAVE ALL")
    query(conn, "SET GLOBAL gtid_slave_pos = %s", (slave_pos,), "SET GLOBAL gtid_slave_pos")
