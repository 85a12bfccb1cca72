"""
MariaDB replication for rolestack: GTID replication over verified TLS, the accounts it needs, switching a
server read-only, and provisioning a new replica from its primary.

Written for MariaDB 10.11 (Debian 12); talks to the server with PyMySQL (``salt-pip install PyMySQL``), not
with Salt's former ``mysql`` module (gone from Salt 3008) nor ``saltext-mysql``.

Connection options
------------------
Every function takes ``connection_*`` keyword arguments. Each falls back to the minion configuration or
pillar key shown (looked up with ``config.option``), then to the default:

============================== =========================== ==========================================
argument                       config / pillar key         default
============================== =========================== ==========================================
``connection_unix_socket``     ``mariadb.unix_socket``     ``/run/mysqld/mysqld.sock`` (if no host)
``connection_host``            ``mariadb.host``            none: the socket is used
``connection_port``            ``mariadb.port``            ``3306``
``connection_user``            ``mariadb.user``            ``root`` (socket authentication on Debian)
``connection_password``        ``mariadb.password``        none (sent as UTF-8)
``connection_ssl_ca``          ``mariadb.ssl_ca``          none (TCP only: verify the server with it)
``connection_ssl_cert``        ``mariadb.ssl_cert``        none (TCP only: client certificate)
``connection_ssl_key``         ``mariadb.ssl_key``         none
``connection_connect_timeout`` ``mariadb.connect_timeout`` ``10`` seconds
============================== =========================== ==========================================

Arguments win over configuration. When the arguments name a socket or a host, only they decide how to
connect; otherwise the configuration does; a socket wins over a host. TLS options apply to TCP connections
only (a socket connection never uses TLS); with ``ssl_ca`` the server certificate and its name (the host)
are verified; without TLS options PyMySQL still tries unverified TLS on TCP.

Errors
------
Server and connection errors raise :py:class:`CommandExecutionError` (its ``errno`` attribute holds the
MariaDB error code, ``server_message`` the server's message); bad arguments raise
:py:class:`SaltInvocationError`.

MariaDB 10.11 notes
-------------------
- ``super_read_only`` does not exist: ``read_only`` blocks writes from every account without the
  ``READ_ONLY ADMIN`` privilege (since 10.11 ``SUPER`` no longer implies it; ``ALL sql.PRIVILEGES`` does). The
  replica's SQL thread is never blocked.
- Semi-synchronous replication is built in (no plugin): ``rpl_semi_sync_master_enabled``,
  ``rpl_semi_sync_slave_enabled``, ``rpl_semi_sync_master_wait_point`` and the status variables
  ``Rpl_semi_sync_master_clients``, ``Rpl_semi_sync_master_status``, ``Rpl_semi_sync_slave_status``.
- ``SHOW GRANTS`` prints ``REPLICATION CLIENT`` as ``BINLOG MONITOR`` and ``REPLICA MONITOR`` as
  ``SLAVE MONITOR``; this module accepts either spelling.
- A replication account needs ``REPLICATION SLAVE`` only. The account running this module needs, on a
  replica, ``REPLICATION SLAVE ADMIN`` (START/STOP/CHANGE MASTER), ``SLAVE MONITOR`` (SHOW SLAVE STATUS),
  ``READ_ONLY ADMIN`` and ``CONNECTION ADMIN`` (KILL): Debian's ``root`` over the socket has them all.
- mariabackup 10.11 still names its files ``xtrabackup_*`` (11.x: ``mariadb_backup_*``); both are read.
"""

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

try:
    # synced _utils: importable while Salt's loader loads this module
    import rolestack_gtid as gtid
    import rolestack_mariadb_sql as sql
    import rolestack_mariadb_stream as streaming
except ImportError:
    try:
        # pip-installed rolestack (Salt loads no utils from entry points)
        from rolestack._utils import rolestack_gtid as gtid
        from rolestack._utils import rolestack_mariadb_sql as sql
        from rolestack._utils import rolestack_mariadb_stream as streaming
    except ImportError:
        gtid = sql = streaming = None

try:
    import pymysql
    import pymysql.cursors

    HAS_PYMYSQL = True
except ImportError:
    HAS_PYMYSQL = False

log = logging.getLogger(__name__)

__virtualname__ = "mariadb_replication"

DEFAULT_SOCKET = "/run/mysqld/mysqld.sock"

_CONNECTION_KEYS = (
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


def __virtual__():
    if not HAS_PYMYSQL:
        return (False, "mariadb_replication: PyMySQL is not installed")
    if gtid is None:
        return (False, "mariadb_replication: the rolestack_gtid util is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


class MariaDBError(CommandExecutionError):
    """A failure reported by the server (or the connection to it): ``errno`` and ``server_message``."""

    def __init__(self, message, errno=None, server_message=None):
        super().__init__(message)
        self.errno = errno
        self.server_message = server_message


class _Unreachable(MariaDBError):
    """The server could not be reached at all (down, no socket, refused the connection or the login)."""


# ---------------------------------------------------------------------------------------------------------
# pure helpers: GTID positions, SQL text, grants, status rows (covered by tests/unit)


def _parse_gtid(position):
    """
    A GTID position (``"0-1-100,1-2-7"``) as ``{domain_id: (server_id, seq_no)}``. Empty or None is the
    empty position; anything else malformed raises SaltInvocationError.
    """
    return {domain: (server, seq) for domain, server, seq in gtid.parse(position)}


def _connection_settings(args, lookup):
    """
    The PyMySQL connect() keywords for ``connection_*`` arguments (without the prefix) and a config
    ``lookup(name)``; see the module documentation for the rules.
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
        "cursorclass": pymysql.cursors.DictCursor,
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


# ---------------------------------------------------------------------------------------------------------
# the connection


def _connection_args(kwargs):
    """The ``connection_*`` keywords (prefix removed); Salt's ``__pub_*`` keywords are ignored."""
    args = {}
    for key, value in kwargs.items():
        if key.startswith("__"):
            continue
        name = key[len("connection_") :] if key.startswith("connection_") else None
        if name not in _CONNECTION_KEYS:
            raise SaltInvocationError(f"unexpected keyword argument {key!r}")
        args[name] = value
    return args


def _lookup(name):
    return __salt__["config.option"](f"mariadb.{name}", None)


def _server_error(err, doing=None):
    if len(err.args) >= 2 and isinstance(err.args[0], int):
        code, message = err.args[0], str(err.args[1])
    else:
        code, message = None, str(err) or type(err).__name__
    prefix = f"{doing}: " if doing else ""
    return MariaDBError(f"{prefix}MariaDB error {code}: {message}", errno=code, server_message=message)


@contextlib.contextmanager
def _connect(**kwargs):
    """Connect with the ``connection_*`` keywords; MariaDB errors inside become CommandExecutionError."""
    settings, where = _connection_settings(_connection_args(kwargs), _lookup)
    try:
        conn = pymysql.connect(**settings)
    except pymysql.MySQLError as err:
        error = _server_error(err, f"cannot connect to MariaDB ({where})")
        raise _Unreachable(str(error), error.errno, error.server_message) from err
    except (OSError, ValueError) as err:
        raise _Unreachable(f"cannot connect to MariaDB ({where}): {err}") from err
    try:
        yield conn
    except pymysql.MySQLError as err:
        raise _server_error(err) from err
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _query(conn, sql, args=None, doing=None):
    """Run one statement; the rows as dicts. ``doing`` names it in errors (never put secrets there)."""
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
    except pymysql.MySQLError as err:
        raise _server_error(err, doing or sql.split(" ", 2)[0]) from err


def _replica_rows(conn):
    return _query(conn, "SHOW ALL SLAVES STATUS", doing="SHOW ALL SLAVES STATUS")


# ---------------------------------------------------------------------------------------------------------
# replication state


def status(**connection_args):
    """
    The replication state of the server in one dict: the default connection's ``SHOW ALL SLAVES STATUS``
    columns (``Slave_IO_Running``, ``Slave_SQL_Running``, ``Last_IO_Error``, ``Last_SQL_Error``,
    ``Seconds_Behind_Master``, ``Master_Host``, ``Master_Port``, ``Master_SSL_*``, ``Using_Gtid``, ...; None
    when no source is configured), the variables ``server_id``, ``read_only``, ``log_bin``,
    ``log_slave_updates``, ``gtid_strict_mode``, ``gtid_domain_id``, ``gtid_current_pos``, ``gtid_slave_pos``,
    ``gtid_binlog_pos``, ``gtid_binlog_state``, ``binlog_format``, the semi-sync settings and status (``rpl_semi_sync_master_enabled``,
    ``rpl_semi_sync_slave_enabled``, ``rpl_semi_sync_master_wait_point``, ``Rpl_semi_sync_master_clients``,
    ``Rpl_semi_sync_master_status``, ``Rpl_semi_sync_slave_status``), and:

    role
        ``replica`` (a source is configured), ``primary`` (none, and read_only is off) or ``standalone``
        (none, read_only on).
    replica_configured
        Whether the default connection has a source.
    replica_connections
        The names of all replication connections (``""`` is the default one).
    binlog_dump_threads
        How many replicas are reading this server's binary log right now.

    CLI Example:

    .. code-block:: bash

        salt '*' mariadb_replication.status
    """
    names = sql.BOOL_VARIABLES + sql.INT_VARIABLES + sql.TEXT_VARIABLES
    placeholders = ", ".join(["%s"] * len(names))
    with _connect(**connection_args) as conn:
        rows = _replica_rows(conn)
        variables = _query(
            conn, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({placeholders})", names, "SHOW GLOBAL VARIABLES"
        )
        status_names = tuple(sql.STATUS_VARIABLES)
        status_rows = _query(
            conn,
            f"SHOW GLOBAL STATUS WHERE Variable_name IN ({', '.join(['%s'] * len(status_names))})",
            status_names,
            "SHOW GLOBAL STATUS",
        )
        dumps = _query(
            conn,
            "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%%'",
            (),
            "counting binlog dump threads",
        )[0]["n"]
    return sql.merge_status(rows, variables, status_rows, dumps)


def replica_settings(**connection_args):
    """
    The source this server replicates from, as ``configure_replica`` arguments (to compare with a desired
    configuration), or None when none is configured: ``master_host``, ``master_port``, ``master_user``,
    ``ssl`` (MASTER_SSL), ``ssl_ca``, ``ssl_cert``, ``ssl_key``, ``ssl_verify``
    (MASTER_SSL_VERIFY_SERVER_CERT), ``use_gtid`` (``slave_pos``, ``current_pos`` or ``no``) and
    ``connect_retry``. MariaDB never shows the password, so a changed password cannot be detected.

    CLI Example:

    .. code-block:: bash

        salt '*' mariadb_replication.replica_settings
    """
    with _connect(**connection_args) as conn:
        return sql.replica_settings_from_row(sql.default_connection(_replica_rows(conn)))


def lag(**connection_args):
    """
    How far behind its source this replica is: ``seconds_behind_master`` (None when not replicating),
    ``io_running``, ``sql_running``, ``replicating`` (both), ``configured``, ``last_io_error`` and
    ``last_sql_error``.

    CLI Example:

    .. code-block:: bash

        salt '*' mariadb_replication.lag
    """
    with _connect(**connection_args) as conn:
        return sql.lag_from_row(sql.default_connection(_replica_rows(conn)) or {})


def health(max_lag_seconds=None, **connection_args):
    """
    Whether this replica is healthy: both replication threads run, no replication error, and at most
    ``max_lag_seconds`` behind its source (default: the db pillar's ``rolestack:db:settings:max_lag_seconds``).
    Returns ``{"healthy": bool, "problems": [...], "seconds_behind_master": n}``.

    CLI Example:

    .. code-block:: bash

        salt -C 'I@rolestack:host:roles:db and not I@rolestack:host:roles:masterdb' mariadb_replication.health
    """
    if max_lag_seconds is None:
        max_lag_seconds = __salt__["config.get"]("rolestack:db:settings:max_lag_seconds", None)
    info = lag(**connection_args)
    problems = sql.health_problems(info, max_lag_seconds)
    return {"healthy": not problems, "problems": problems, "seconds_behind_master": info["seconds_behind_master"]}


def gtid_compare(a, b):
    """
    Whether GTID position ``a`` is at least ``b``: for every replication domain of ``b``, ``a`` has reached
    its sequence number. Server ids do not order GTIDs (with ``gtid_strict_mode`` sequence numbers grow within
    a domain), but the same sequence number from two servers is a fork: not "at least". An empty position is
    behind everything but another empty one. Pure: no server involved (``rolestack_gtid.order``, the db
    runner's order too).

    CLI Example:

    .. code-block:: bash

        salt '*' mariadb_replication.gtid_compare 0-1-120,1-3-7 0-1-100
    """
    return gtid.at_least(a, b)


def gtid_most_advanced(positions):
    """
    The names whose GTID position is at least every other position (several when they are equal; an empty
    list when positions diverged and none is ahead of all). ``positions`` maps names (minions) to positions.
    Used to choose the replica to promote in a failover. Pure: no server involved.

    CLI Example:

    .. code-block:: bash

        salt-call mariadb_replication.gtid_most_advanced '{"db2": "0-1-100", "db3": "0-1-98"}'
    """
    if not isinstance(positions, dict) or not positions:
        raise SaltInvocationError("positions must be a non-empty mapping of name to GTID position")
    return sorted(
        name
        for name, position in positions.items()
        if all(gtid_compare(position, other) for other in positions.values())
    )


def gtid_missing(position, binlog_state, slave_pos=None):
    """
    The GTIDs of ``position`` that a server whose ``gtid_binlog_state`` is ``binlog_state`` (and, when given,
    whose ``gtid_slave_pos`` is ``slave_pos``) never applied: what a server at ``position`` (its
    ``gtid_binlog_pos``) holds that the other server never had. An empty list means the other server has every
    one of them (a replica of it can continue from ``position``); otherwise the first server forked: those
    transactions were written on it and never replicated. Pure: no server involved. Malformed input raises
    SaltInvocationError.

    CLI Example:

    .. code-block:: bash

        salt '*' mariadb_replication.gtid_missing 0-1-12 0-1-10,0-2-11
        salt '*' mariadb_replication.gtid_missing 0-1-12 '' slave_pos=0-1-12

    position
        A GTID position, the last GTID of each domain (``@@gtid_binlog_pos`` of the server to check).

    binlog_state
        A binlog state, the last GTID of each domain and server (``@@gtid_binlog_state`` of the other server).

    slave_pos
        The other server's ``@@gtid_slave_pos``: what it applied as a replica, or what the backup it was
        provisioned from held (a replica restored by mariabackup has those GTIDs there only, not in its binary
        log).
    """
    return gtid.missing(position, gtid.applied(binlog_state, slave_pos or ""))


def _peer_connection(host, user, password, ssl_ca, ssl_cert, ssl_key, port, timeout):
    """``connection_*`` arguments for a peer db server over verified TLS as the replication account."""
    spec = sql.replica_spec(host, user, password, port, ssl_ca, ssl_cert, ssl_key)
    return {
        "connection_host": spec["master_host"],
        "connection_port": spec["master_port"],
        "connection_user": spec["master_user"],
        "connection_password": spec["master_password"],
        "connection_ssl_ca": spec["ssl_ca"],
        "connection_ssl_cert": spec["ssl_cert"],
        "connection_ssl_key": spec["ssl_key"],
        "connection_connect_timeout": timeout,
    }


def _peer_variables(connection, what):
    with _connect(**connection) as conn:
        row = _query(
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


def source_binlog_state(
    master_host, master_user, master_password, ssl_ca, ssl_cert=None, ssl_key=None, master_port=3306, timeout=10
):
    """
    What a replication source has applied and whether it takes writes, read over TLS as the replication account
    with the credentials ``configure_replica`` takes (the source's certificate and name verified against
    ``ssl_ca``; the client certificate for ``REQUIRE X509`` accounts). Reading a system variable needs no
    privilege: ``REPLICATION SLAVE`` is enough. Returns ``{"gtid_binlog_state", "gtid_binlog_pos",
    "gtid_slave_pos", "read_only"}``; raises CommandExecutionError when the source cannot be reached or refuses
    the login.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.source_binlog_state db2.example repl 's3cret' /etc/mysql/tls/ca.pem \\
            ssl_cert=/etc/mysql/tls/client.pem ssl_key=/etc/mysql/tls/client.key
    """
    connection = _peer_connection(master_host, master_user, master_password, ssl_ca, ssl_cert, ssl_key,
                                  master_port, timeout)  # fmt: skip
    return _peer_variables(connection, master_host)


def peers_read_only(peers, user, password, ssl_ca, ssl_cert=None, ssl_key=None, port=3306, timeout=2):
    """
    Whether each peer db server refuses writes (``read_only``), read over TLS as the replication account (the
    account every db host has, through replication; the peer's certificate and name verified against ``ssl_ca``),
    each with a ``timeout``-second connection timeout. ``peers`` is a list of host names (as their certificates
    name them) or ``{"host", "port"}`` mappings. Returns ``{"read_only": {host: bool}, "unreachable": {host:
    error}}``: a peer that does not answer, or refuses the login (a fresh server that holds no account yet), is
    unreachable, not writable.

    CLI Example:

    .. code-block:: bash

        salt db2 mariadb_replication.peers_read_only '[db1.example]' repl 's3cret' /etc/mysql/ssl/ca.pem \\
            ssl_cert=/etc/mysql/ssl/client.pem ssl_key=/etc/mysql/ssl/client.key
    """
    if isinstance(peers, str) or not isinstance(peers, list | tuple):
        raise SaltInvocationError(f"peers must be a list of host names, not {type(peers).__name__}")
    found = {"read_only": {}, "unreachable": {}}
    for peer in peers:
        host, peer_port = (peer.get("host"), peer.get("port", port)) if isinstance(peer, dict) else (peer, port)
        connection = _peer_connection(host, user, password, ssl_ca, ssl_cert, ssl_key, peer_port, timeout)
        try:
            found["read_only"][host] = _peer_variables(connection, host)["read_only"]
        except CommandExecutionError as err:
            found["unreachable"][host] = str(err)
    return found


def wait_for_gtid(gtid_pos, timeout=60, **connection_args):
    """
    Wait until this replica has applied GTID position ``gtid_pos`` (``MASTER_GTID_WAIT``, which follows
    ``gtid_slave_pos``: use it on replicas). Returns True; raises CommandExecutionError on timeout.

    CLI Example:

    .. code-block:: bash

        salt db2 mariadb_replication.wait_for_gtid 0-1-1234 timeout=30

    gtid_pos
        The position to reach, usually the primary's ``gtid_binlog_pos``.

    timeout
        Seconds to wait. Defaults to ``60``.
    """
    _parse_gtid(gtid_pos)
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"timeout must be a number of seconds, not {timeout!r}")
    if timeout < 0:
        raise SaltInvocationError("timeout cannot be negative")
    with _connect(**connection_args) as conn:
        result = _query(conn, "SELECT MASTER_GTID_WAIT(%s, %s) AS r", (gtid_pos, timeout), "MASTER_GTID_WAIT")[0]["r"]
        if result == 0:
            return True
        now = _query(conn, "SELECT @@gtid_slave_pos AS p", (), "reading gtid_slave_pos")[0]["p"]
    if result == -1:
        raise CommandExecutionError(
            f"timed out after {timeout:g}s waiting for GTID position {gtid_pos} (gtid_slave_pos is {now!r})"
        )
    raise CommandExecutionError(f"MASTER_GTID_WAIT({gtid_pos!r}) returned {result!r}")


# ---------------------------------------------------------------------------------------------------------
# replication control


def configure_replica(
    master_host,
    master_user,
    master_password,
    master_port=3306,
    ssl_ca=None,
    ssl_cert=None,
    ssl_key=None,
    ssl_verify=True,
    use_gtid="slave_pos",
    connect_retry=10,
    start=True,
    slave_pos_from_binlog=False,
    **connection_args,
):
    """
    Point this server at a source: ``STOP SLAVE``, ``CHANGE MASTER TO`` (TLS always on, the source's
    certificate verified against ``ssl_ca`` and, with ``ssl_verify``, its name against ``master_host``; GTID
    positioning), then ``START SLAVE``. Returns the new ``replica_settings``.

    CLI Example:

    .. code-block:: bash

        salt db2 mariadb_replication.configure_replica db1.example repl 's3cret' \\
            ssl_ca=/etc/mysql/tls/ca.pem ssl_cert=/etc/mysql/tls/client.pem ssl_key=/etc/mysql/tls/client.key

    master_host / master_port
        The source's address (must match a name or IP address of its certificate) and port (``3306``).

    master_user / master_password
        The replication account on the source (see ``replication_user_present``).

    ssl_ca
        The CA file that signed the source's certificate. Required: replication never runs in clear text.

    ssl_cert / ssl_key
        This replica's client certificate and key, for accounts that ``REQUIRE X509`` (or SUBJECT/ISSUER).

    ssl_verify
        MASTER_SSL_VERIFY_SERVER_CERT: also check the certificate's name. Defaults to ``True``.

    use_gtid
        ``slave_pos`` (default) or ``current_pos`` (an old primary rejoining as a replica).

    connect_retry
        Seconds between connection attempts. Defaults to ``10``.

    start
        Start the replica threads afterwards. Defaults to ``True``.

    slave_pos_from_binlog
        Before CHANGE MASTER, ``gtid_slave_pos`` is set, per domain, to the later of ``gtid_binlog_pos`` and
        ``gtid_slave_pos``: the server continues after the last transaction of its own binary log, or after the
        last one it applied when that is later (a replica restored by mariabackup holds its GTIDs there only). For
        a server that wrote transactions itself (an old primary rejoining; its ``gtid_slave_pos`` is stale): check
        first that the source holds them all (``source_binlog_state``, ``gtid_missing``). Defaults to ``False``.

    Files must be readable by the server (user ``mysql``); they are checked when connected over the socket.
    """
    spec = sql.replica_spec(
        master_host,
        master_user,
        master_password,
        master_port,
        ssl_ca,
        ssl_cert,
        ssl_key,
        ssl_verify,
        use_gtid,
        connect_retry,
    )
    settings, _ = _connection_settings(_connection_args(connection_args), _lookup)
    if "unix_socket" in settings:
        for name in ("ssl_ca", "ssl_cert", "ssl_key"):
            if spec[name] and not os.path.isfile(spec[name]):
                raise SaltInvocationError(f"{name} {spec[name]} does not exist")
    with _connect(**connection_args) as conn:
        _query(conn, "STOP SLAVE", doing="STOP SLAVE")
        if slave_pos_from_binlog:
            # an old primary continues after its own last transaction; one that wrote none (promoted right after
            # it was restored by mariabackup, then demoted) after what it applied: its binary log may be empty
            row = _query(
                conn,
                "SELECT @@GLOBAL.gtid_binlog_pos AS binlog, @@GLOBAL.gtid_slave_pos AS slave",
                (),
                "reading the GTID positions",
            )[0]
            resume = gtid.resume_position(row["binlog"] or "", row["slave"] or "")
            _query(conn, "SET GLOBAL gtid_slave_pos = %s", (resume,), doing="SET GLOBAL gtid_slave_pos")
        _query(conn, sql.change_master_sql(spec, conn.literal), doing="CHANGE MASTER TO")
        if start:
            _query(conn, "START SLAVE", doing="START SLAVE")
        return sql.replica_settings_from_row(sql.default_connection(_replica_rows(conn)))


def start_replica(timeout=0, **connection_args):
    """
    ``START SLAVE``. With ``timeout``, wait that many seconds for both replica threads to run and raise
    with the IO/SQL error if they do not. Returns ``lag()``.

    CLI Example:

    .. code-block:: bash

        salt db2 mariadb_replication.start_replica timeout=30
    """
    deadline = time.monotonic() + float(timeout or 0)
    with _connect(**connection_args) as conn:
        if not sql.replica_configured(sql.default_connection(_replica_rows(conn))):
            raise CommandExecutionError("no source is configured: use configure_replica first")
        _query(conn, "START SLAVE", doing="START SLAVE")
        while True:
            state = sql.lag_from_row(sql.default_connection(_replica_rows(conn)) or {})
            if state["replicating"] or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    if timeout and not state["replicating"]:
        raise CommandExecutionError(
            f"the replica threads are not running after {timeout}s: "
            f"IO error: {state['last_io_error'] or 'none'}; SQL error: {state['last_sql_error'] or 'none'}"
        )
    return state


def stop_replica(**connection_args):
    """
    ``STOP SLAVE`` (both threads of the default connection). Returns True.

    CLI Example:

    .. code-block:: bash

        salt db2 mariadb_replication.stop_replica
    """
    with _connect(**connection_args) as conn:
        _query(conn, "STOP SLAVE", doing="STOP SLAVE")
    return True


def reset_replica(all=True, **connection_args):
    """
    Stop the replica and forget its source: ``RESET SLAVE ALL`` (or ``RESET SLAVE`` with ``all=False``,
    which keeps the connection settings but drops relay logs). ``gtid_slave_pos`` is kept. Returns True.

    CLI Example:

    .. code-block:: bash

        salt db2 mariadb_replication.reset_replica
    """
    with _connect(**connection_args) as conn:
        _query(conn, "STOP SLAVE", doing="STOP SLAVE")
        _query(conn, "RESET SLAVE ALL" if all else "RESET SLAVE", doing="RESET SLAVE")
    return True


def set_read_only(enabled=True, lock_wait_timeout=2, **connection_args):
    """
    Switch ``read_only``. MariaDB 10.11 has no ``super_read_only``: ``read_only`` refuses writes from every
    account without ``READ_ONLY ADMIN`` (not implied by ``SUPER`` since 10.11), and never stops the replica
    SQL thread. Setting it ON waits for running write statements and table locks, at most
    ``lock_wait_timeout`` seconds (this session's ``lock_wait_timeout``, default 2; the server's default is a
    year): then it fails with MariaDB error 1205 and ``read_only`` is unchanged. A caller that gave up waiting
    (the db runner undoing a switchover) can never see a pending ``read_only=ON`` land later. Returns
    ``{"read_only": <new value>, "changed": <bool>}``.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.set_read_only
        salt db1 mariadb_replication.set_read_only lock_wait_timeout=5
        salt db2 mariadb_replication.set_read_only enabled=False
    """
    if not isinstance(enabled, bool):
        raise SaltInvocationError(f"enabled must be True or False, not {enabled!r}")
    if isinstance(lock_wait_timeout, bool) or not isinstance(lock_wait_timeout, int) or lock_wait_timeout < 1:
        raise SaltInvocationError(
            f"lock_wait_timeout must be a whole number of seconds >= 1, not {lock_wait_timeout!r}"
        )
    with _connect(**connection_args) as conn:
        before = bool(_query(conn, "SELECT @@GLOBAL.read_only AS v", (), "reading read_only")[0]["v"])
        if before != enabled:
            _query(conn, f"SET SESSION lock_wait_timeout = {lock_wait_timeout}", doing="SET lock_wait_timeout")
            _query(conn, f"SET GLOBAL read_only = {1 if enabled else 0}", doing="SET GLOBAL read_only")
    return {"read_only": enabled, "changed": before != enabled}


def promote(gtid_pos=None, timeout=60, **connection_args):
    """
    Make this replica the primary in one call (a switchover's write block is as short as its slowest step):
    wait until it applied ``gtid_pos`` (when given), stop and forget replication (``RESET SLAVE ALL``), then
    ``read_only`` OFF. Nothing after a failed step runs: a replica that did not catch up stays a read-only
    replica. Returns ``{"applied": <gtid_pos or None>, "gtid_current_pos", "read_only": False}``.

    CLI Example:

    .. code-block:: bash

        salt db2 mariadb_replication.promote 0-1-1234 timeout=30
        salt db2 mariadb_replication.promote

    gtid_pos
        The old primary's last position (its ``gtid_binlog_pos`` once it is read-only); None when it is dead
        (failover: the replica applied its relay log already).

    timeout
        Seconds to wait for ``gtid_pos``. Defaults to ``60``.
    """
    if gtid_pos:
        wait_for_gtid(gtid_pos, timeout=timeout, **connection_args)
    reset_replica(**connection_args)
    set_read_only(False, **connection_args)
    with _connect(**connection_args) as conn:
        current = _query(conn, "SELECT @@gtid_current_pos AS p", (), "reading gtid_current_pos")[0]["p"]
    return {"applied": gtid_pos or None, "gtid_current_pos": current, "read_only": False}


def kill_client_connections(exclude_users=None, **connection_args):
    """
    Kill every client connection except replication threads (binlog dump threads of replicas, this server's
    own replica threads), system threads, this module's connection and the users in ``exclude_users``. For a
    switchover, after ``set_read_only``. Returns the killed connections (id, user, host, db, command).

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.kill_client_connections exclude_users='[monitor]'
    """
    if exclude_users is None:
        exclude_users = []
    if isinstance(exclude_users, str):
        exclude_users = [exclude_users]
    if not isinstance(exclude_users, list | tuple | set):
        raise SaltInvocationError("exclude_users must be a list of user names")
    killed = []
    with _connect(**connection_args) as conn:
        rows = _query(
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
                _query(conn, f"KILL CONNECTION {int(row['ID'])}", doing=f"KILL CONNECTION {row['ID']}")
            except MariaDBError as err:
                if err.errno == 1094:  # unknown thread id: it has gone already
                    continue
                raise
            killed.append(
                {"id": row["ID"], "user": row["USER"], "host": row["HOST"], "db": row["DB"], "command": row["COMMAND"]}
            )
    return killed


def fence_writes(service="mariadb", **connection_args):
    """
    Make sure this server takes no more writes, before another db host is promoted in its place (``db.failover``
    calls it on a dead primary whose minion still answers): ``read_only`` ON and every client connection killed
    (``kill_client_connections``; a write that held the lock is killed, then ``read_only`` set again); when
    MariaDB cannot be reached (down, crashed), the ``service`` is stopped so that it cannot come back by itself,
    and must be stopped afterwards. Returns ``{"fenced": "read_only" or "stopped", "killed": [...]}``; raises
    CommandExecutionError when it cannot make sure.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.fence_writes
    """
    try:
        try:
            set_read_only(True, **connection_args)
            killed = kill_client_connections(**connection_args)
        except _Unreachable:
            raise
        except MariaDBError:
            # read_only waits for running writes (lock_wait_timeout): kill them, then it is immediate
            killed = kill_client_connections(**connection_args)
            set_read_only(True, **connection_args)
            killed += kill_client_connections(**connection_args)
        return {"fenced": "read_only", "killed": killed}
    except _Unreachable as err:
        unreachable = err
    __salt__["service.stop"](service)
    if __salt__["service.status"](service):
        raise CommandExecutionError(f"MariaDB is unreachable ({unreachable}) but the {service} service still runs")
    return {"fenced": "stopped", "killed": [], "unreachable": str(unreachable)}


# ---------------------------------------------------------------------------------------------------------
# accounts, databases, grants


def _user_row(conn, user, host):
    rows = _query(
        conn,
        "SELECT ssl_type, ssl_cipher, x509_issuer, x509_subject, plugin, authentication_string"
        " FROM mysql.user WHERE User = %s AND Host = %s",
        (user, host),
        f"reading account {user}@{host}",
    )
    return rows[0] if rows else None


def _grants(conn, user, host):
    rows = _query(conn, "SHOW GRANTS FOR %s@%s", (user, host), f"SHOW GRANTS FOR {user}@{host}")
    return sql.parse_grants(next(iter(row.values())) for row in rows)


def _password_matches(conn, row, password):
    if row["plugin"] not in ("mysql_native_password", "") or not row["authentication_string"]:
        return False
    hashed = _query(conn, "SELECT PASSWORD(%s) AS h", (password,), "hashing the password")[0]["h"]
    return hashed == row["authentication_string"]


def user_info(user, host="%", password=None, **connection_args):
    """
    An account, or None when it does not exist: ``user``, ``host``, ``require`` (None, ``SSL``, ``X509`` or a
    dict of ``issuer``/``subject``/``cipher``), ``plugin``, ``grants`` (``{"*.*": [privileges], "`db`.*":
    [...]}``) and ``password_matches`` (whether ``password`` is the account's password; None when no
    password is given).

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.user_info app host=10.0.0.%
    """
    sql.account(user, host)
    with _connect(**connection_args) as conn:
        row = _user_row(conn, user, host)
        if row is None:
            return None
        return {
            "user": user,
            "host": host,
            "require": sql.require_from_row(row),
            "plugin": row["plugin"],
            "grants": {on: sorted(privs) for on, privs in _grants(conn, user, host).items()},
            "password_matches": None if password is None else _password_matches(conn, row, password),
        }


def replication_user_info(user, host="%", password=None, **connection_args):
    """
    ``user_info`` of a replication account, plus ``replication`` (it holds REPLICATION SLAVE) and
    ``tls_required`` (it must log in over TLS). None when the account does not exist.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.replication_user_info repl
    """
    info = user_info(user, host, password, **connection_args)
    if info is None:
        return None
    held = set(info["grants"].get("*.*", []))
    info["replication"] = "REPLICATION SLAVE" in held or "ALL sql.PRIVILEGES" in held
    info["tls_required"] = info["require"] is not None
    return info


def user_present(user, password, host="%", require=None, test=False, **connection_args):
    """
    Ensure an account exists with this password and TLS requirement (``require`` None means none: an
    existing requirement is removed). Returns ``{"changed": bool, "changes": {...}}``; with ``test=True``
    nothing is changed and the changes that would be made are returned. Passwords never appear in changes.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.user_present app 's3cret' host=10.0.0.% require=SSL

    require
        None, ``SSL``, ``X509``, a dict of ``issuer``/``subject``/``cipher`` or the SQL form
        ``"SUBJECT '/CN=app' AND ISSUER '/CN=CA'"``.
    """
    sql.account(user, host)
    if not isinstance(password, str) or not password:
        raise SaltInvocationError("password must be a non-empty string")
    wanted = sql.normalize_require(require)
    changes = {}
    with _connect(**connection_args) as conn:
        account_sql = sql.account(user, host, conn.literal)
        row = _user_row(conn, user, host)
        if row is None:
            changes["created"] = f"{user}@{host}"
            if wanted is not None:
                changes["require"] = {"old": None, "new": wanted}
            if not test:
                _query(
                    conn,
                    f"CREATE USER {account_sql} IDENTIFIED BY {conn.literal(password)} "
                    + sql.require_clause(wanted, conn.literal),
                    doing=f"CREATE USER {user}@{host}",
                )
            return {"changed": True, "changes": changes}
        if not _password_matches(conn, row, password):
            changes["password"] = "changed"
            if not test:
                _query(
                    conn,
                    f"ALTER USER {account_sql} IDENTIFIED BY {conn.literal(password)}",
                    doing=f"ALTER USER {user}@{host} IDENTIFIED BY",
                )
        current = sql.require_from_row(row)
        if current != wanted:
            changes["require"] = {"old": current, "new": wanted}
            if not test:
                _query(
                    conn,
                    f"ALTER USER {account_sql} {sql.require_clause(wanted, conn.literal)}",
                    doing=f"ALTER USER {user}@{host} REQUIRE",
                )
    return {"changed": bool(changes), "changes": changes}


def user_absent(user, host="%", test=False, **connection_args):
    """
    Ensure an account does not exist. Returns ``{"changed": bool, "changes": {...}}``.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.user_absent olduser host=%
    """
    sql.account(user, host)
    with _connect(**connection_args) as conn:
        if _user_row(conn, user, host) is None:
            return {"changed": False, "changes": {}}
        if not test:
            _query(conn, f"DROP USER {sql.account(user, host, conn.literal)}", doing=f"DROP USER {user}@{host}")
    return {"changed": True, "changes": {"deleted": f"{user}@{host}"}}


def user_hosts(user, **connection_args):
    """
    The hosts (``Host`` column) of every account named ``user``, sorted; an empty list when there is none.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.user_hosts wiki
    """
    sql.account(user, "%")
    with _connect(**connection_args) as conn:
        rows = _query(conn, "SELECT Host FROM mysql.user WHERE User = %s", (user,), f"listing the accounts of {user}")
    return sorted(sql.as_text(row["Host"]) for row in rows)


def user_absent_except(user, hosts, test=False, **connection_args):
    """
    Ensure ``user`` has no account at any host but ``hosts`` (a list): the accounts of a managed user whose
    host left the platform or lost the role are dropped. Accounts at ``hosts`` are neither created nor changed.
    Returns ``{"changed": bool, "changes": {"deleted": ["user@host", ...]}}``.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.user_absent_except wiki '[10.10.10.51, 10.10.10.52]' test=True
    """
    if isinstance(hosts, str) or not isinstance(hosts, list | tuple | set):
        raise SaltInvocationError(f"hosts must be a list of hosts to keep, not {hosts!r}")
    keep = set(hosts)
    stale = [host for host in user_hosts(user, **connection_args) if host not in keep]
    for host in stale:
        if not test:
            user_absent(user, host, **connection_args)
    if not stale:
        return {"changed": False, "changes": {}}
    return {"changed": True, "changes": {"deleted": [f"{user}@{host}" for host in stale]}}


def grant_present(user, host, privileges, database, exact=False, test=False, **connection_args):
    """
    Ensure an account holds these privileges on a database (``*`` for global privileges). With ``exact``
    False, privileges it holds beyond them are left alone; with ``exact`` True they are revoked (on that
    database only). Returns ``{"changed": bool, "changes": {"granted": [...], "revoked": [...], "on": ...}}``.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.grant_present app 10.0.0.% 'SELECT,INSERT,UPDATE,DELETE' app
        salt db1 mariadb_replication.grant_present wiki 10.10.10.51 'SELECT,INSERT' wiki exact=True

    privileges
        A list or a comma-separated string; ``ALL`` means ``ALL sql.PRIVILEGES``.

    database
        A database name, or ``*`` for ``*.*``. In GRANT, ``_`` and ``%`` in a database name are wildcards.
    """
    wanted = sql.normalize_privileges(privileges)
    target = sql.grant_target(database)
    sql.account(user, host)
    changes = {}
    with _connect(**connection_args) as conn:
        if _user_row(conn, user, host) is None:
            raise CommandExecutionError(f"account {user}@{host} does not exist")
        held = _grants(conn, user, host).get(target, set())
        extra = sql.extra_privileges(wanted, held) if exact else set()
        # ALL sql.PRIVILEGES held beyond what is wanted: revoke it all, then grant what is wanted
        missing = set(wanted) - {"USAGE"} if "ALL sql.PRIVILEGES" in extra else sql.missing_privileges(wanted, held)
        account = sql.account(user, host, conn.literal)
        for key, verb, preposition, names in (
            ("revoked", "REVOKE", "FROM", extra),
            ("granted", "GRANT", "TO", missing),
        ):
            if names:
                changes[key] = sorted(names)
                if not test:
                    _query(
                        conn,
                        f"{verb} {', '.join(sorted(names))} ON {target} {preposition} {account}",
                        doing=f"{verb} ON {target} {preposition} {user}@{host}",
                    )
    if not changes:
        return {"changed": False, "changes": {}}
    return {"changed": True, "changes": {**changes, "on": target}}


def replication_user_present(
    user, password, host="%", require="SSL", privileges=("REPLICATION SLAVE",), test=False, **connection_args
):
    """
    Ensure the account replicas log in with: it exists with this password, must use TLS (``require``:
    ``SSL``, ``X509`` or ISSUER/SUBJECT conditions; an account without a TLS requirement is refused) and holds
    ``REPLICATION SLAVE`` (all a replica needs in MariaDB 10.11; more via ``privileges``). Returns
    ``{"changed": bool, "changes": {...}}``.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.replication_user_present repl 's3cret' host=10.0.0.% require=X509
    """
    if sql.normalize_require(require) is None:
        raise SaltInvocationError(
            "a replication account must require TLS: require is SSL, X509 or ISSUER/SUBJECT conditions"
        )
    wanted = sql.normalize_privileges(list(privileges))
    result = user_present(user, password, host, require, test=test, **connection_args)
    if test and result["changes"].get("created"):
        result["changes"]["granted"] = sorted(wanted)
        result["changes"]["on"] = "*.*"
        return result
    granted = grant_present(user, host, sorted(wanted), "*", test=test, **connection_args)
    result["changes"].update(granted["changes"])
    result["changed"] = result["changed"] or granted["changed"]
    return result


def database_present(name, character_set="utf8mb4", collate=None, test=False, **connection_args):
    """
    Ensure a database exists with this default character set (and collation, when given). Returns
    ``{"changed": bool, "changes": {...}}``.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.database_present app
    """
    quoted = sql.quote_identifier(name)
    for what, value in (("character_set", character_set), ("collate", collate)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_]+", str(value)):
            raise SaltInvocationError(f"invalid {what} {value!r}")
    clause = f"CHARACTER SET {character_set}" + (f" COLLATE {collate}" if collate else "")
    with _connect(**connection_args) as conn:
        rows = _query(
            conn,
            "SELECT DEFAULT_CHARACTER_SET_NAME AS cs, DEFAULT_COLLATION_NAME AS co"
            " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (name,),
            f"reading database {name}",
        )
        if not rows:
            if not test:
                _query(conn, f"CREATE DATABASE {quoted} {clause}", doing=f"CREATE DATABASE {name}")
            return {"changed": True, "changes": {"created": name}}
        current = rows[0]
        changes = {}
        if current["cs"].lower() != character_set.lower():
            changes["character_set"] = {"old": current["cs"], "new": character_set}
        if collate and current["co"].lower() != collate.lower():
            changes["collate"] = {"old": current["co"], "new": collate}
        if changes and not test:
            _query(conn, f"ALTER DATABASE {quoted} {clause}", doing=f"ALTER DATABASE {name}")
    return {"changed": bool(changes), "changes": changes}


def database_absent(name, test=False, **connection_args):
    """
    Ensure a database does not exist (dropping it and its data). System databases are refused. Returns
    ``{"changed": bool, "changes": {...}}``.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.database_absent olddb
    """
    quoted = sql.quote_identifier(name)
    if name.lower() in sql.SYSTEM_DATABASES:
        raise SaltInvocationError(f"refusing to drop the system database {name}")
    with _connect(**connection_args) as conn:
        exists = _query(
            conn, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,), f"reading {name}"
        )
        if not exists:
            return {"changed": False, "changes": {}}
        if not test:
            _query(conn, f"DROP DATABASE {quoted}", doing=f"DROP DATABASE {name}")
    return {"changed": True, "changes": {"deleted": name}}


# ---------------------------------------------------------------------------------------------------------
# provisioning a replica: mariabackup (local pipe or one TLS stream from the source) or mysqldump


def _server_up(connection_args):
    try:
        with _connect(**connection_args) as conn:
            _query(conn, "SELECT 1")
        return True
    except CommandExecutionError:
        return False


def _stop_server(service, connection_args, timeout):
    """Stop the local server: through the service, or with SQL SHUTDOWN (then wait for its pid file to go)."""
    if service:
        if not __salt__["service.stop"](service):
            raise CommandExecutionError(f"could not stop service {service}")
        streaming.wait_until(lambda: not _server_up(connection_args), timeout, f"service {service} to stop")
        return
    if not _server_up(connection_args):
        return
    with _connect(**connection_args) as conn:
        row = _query(conn, "SELECT @@pid_file AS pid_file, @@datadir AS datadir", (), "reading pid_file")[0]
        pid_file = os.path.join(row["datadir"], row["pid_file"])
        with contextlib.suppress(pymysql.MySQLError, CommandExecutionError):
            _query(conn, "SHUTDOWN", doing="SHUTDOWN")
    streaming.wait_until(
        lambda: not os.path.exists(pid_file) and not _server_up(connection_args), timeout, "the server to stop"
    )


def _start_server(service, start_command, connection_args, timeout):
    """Start the local server through the service or ``start_command``; the started process id or None."""
    pid = None
    if service:
        if not __salt__["service.start"](service):
            raise CommandExecutionError(f"could not start service {service}")
    else:
        command = shlex.split(start_command) if isinstance(start_command, str) else list(start_command)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        pid = process.pid

        def up():
            if process.poll() is not None:
                raise CommandExecutionError(f"{command[0]} exited with {process.returncode} while starting")
            return _server_up(connection_args)

        streaming.wait_until(up, timeout, "the server to start")
        return pid
    streaming.wait_until(lambda: _server_up(connection_args), timeout, f"service {service} to start")
    return pid


def _role_stream():
    """The db role's stream settings (ROLE_STREAM, moved only by this minion's own configuration)."""
    configured = __opts__.get("mariadb_replication.backup_stream") or {}
    if not isinstance(configured, dict) or set(configured) - set(streaming.ROLE_STREAM):
        raise CommandExecutionError(
            f"the minion option mariadb_replication.backup_stream must be a dict with keys from {sorted(streaming.ROLE_STREAM)}"
        )
    return dict(streaming.ROLE_STREAM, **configured)


def _pillar_host():
    host = __salt__["pillar.get"]("rolestack:host", {}, unmask=True)
    return host if isinstance(host, dict) else {}


def _db_peer(minion_id):
    """
    The db peer (``name``, ``fqdn``, ``address`` from this host's pillar ``rolestack:db:peers``) whose minion id
    is ``minion_id``. A host's one minion id is its inventory name: the id is matched exactly against the
    peers' ``name``, never an FQDN or an address. None when there is no such peer.
    """
    return streaming.peer_named(_db_peers(), minion_id)


def _db_peers():
    return __salt__["pillar.get"]("rolestack:db:peers", [], unmask=True)


def serve_backup_stream(
    port=None,
    allow=None,
    ssl_cert=None,
    ssl_key=None,
    ssl_ca=None,
    bind=None,
    timeout=None,
    idle_timeout=None,
    **connection_args,
):
    """
    Run on the source: stream ONE mariabackup of this server to the replica that ``provision_replica``
    runs on. Listens on ``bind:port``, accepts a single connection from the ``allow`` address only (others
    are closed unanswered), requires TLS with a client certificate signed by ``ssl_ca``, waits (at most
    READY_WAIT, 300 s) for the replica to say it is ready, sends the ``mariabackup --backup --stream=mbstream``
    output and exits. Returns the peer, bytes sent and the backup's GTID position.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.serve_backup_stream 4444 10.0.0.12 \\
            /etc/mysql/ssl/server.pem /etc/mysql/ssl/server.key /etc/mysql/ssl/ca.pem bind=10.0.0.11

    Called through salt's peer publish (a minion's ``publish.publish``: salt passes the caller's authenticated
    minion id as ``__pub_id``), the caller chooses nothing that matters for security: the certificate, key, CA
    and port are the db role's own (ROLE_STREAM: /etc/mysql/ssl/server.pem, server.key, ca.pem, port 4444), the
    listener binds to this host's address (pillar ``rolestack:host:address``), the caller must be a db peer
    (its minion id a name in ``rolestack:db:peers``), the stream goes to that peer's pillar address only, and
    the client certificate must name that peer (CN or subjectAltName equal to its name, FQDN or address; other
    connections are closed and the listener keeps waiting). A peer may pass only ``allow`` (it must then be its
    own address), ``timeout`` and ``idle_timeout``; passing anything else (port, certificates, CA, bind,
    ``connection_*``) is refused before anything listens.

    port / bind
        Where to listen: default the role's port (4444) and this host's pillar address.

    allow
        The replica's address (or a name resolving to it).

    ssl_cert / ssl_key / ssl_ca
        This server's certificate and key (the replica checks it against its CA and the name it connects
        to), and the CA the replica's client certificate must be signed by. Default: the db role's files.

    timeout
        Seconds to wait for the replica to connect: default 600, at most MAX_STREAM_TIMEOUT (900).

    idle_timeout
        Seconds the stream may make no progress (the replica stops reading, or mariabackup stops writing)
        before mariabackup is killed, which releases every lock it holds on this server: default 60, at most
        MAX_IDLE_TIMEOUT (600).

    The backup runs as the connection account (``connection_*``; root over the socket by default), which
    needs RELOAD, PROCESS, LOCK TABLES and BINLOG MONITOR.
    """
    caller = connection_args.get("__pub_id")
    named = (("port", port), ("allow", allow), ("ssl_cert", ssl_cert), ("ssl_key", ssl_key), ("ssl_ca", ssl_ca))
    passed = (*named, ("bind", bind), ("timeout", timeout), ("idle_timeout", idle_timeout))
    given = {name: value for name, value in passed if value is not None}
    given.update({key: value for key, value in connection_args.items() if not key.startswith("__")})
    role = _role_stream()
    host = _pillar_host()
    expect = None
    if caller is not None:
        expect = streaming.stream_peer(caller, given, _db_peers(), host)
        port, allow = role["port"], expect["address"]
        ssl_cert, ssl_key, ssl_ca = role["ssl_cert"], role["ssl_key"], role["ssl_ca"]
        bind, connection_args = host.get("address"), {}
        if not bind:
            raise SaltInvocationError("this host has no rolestack:host:address in its pillar: it serves no peer")
    else:
        if allow is None:
            raise SaltInvocationError("allow (the replica's address) is required")
        port = role["port"] if port is None else port
        ssl_cert, ssl_key, ssl_ca = (value or role[name] for name, value in named[2:])
        bind = bind or host.get("address")
        if not bind:
            raise SaltInvocationError("bind is required (this host has no rolestack:host:address in its pillar)")
    timeout = streaming.seconds(timeout, "timeout", streaming.STREAM_TIMEOUT, streaming.MAX_STREAM_TIMEOUT)
    idle_timeout = streaming.seconds(idle_timeout, "idle_timeout", streaming.IDLE_TIMEOUT, streaming.MAX_IDLE_TIMEOUT)
    port = sql.validate_port(port)
    try:
        allowed = {
            str(streaming.plain_ip(info[4][0])) for info in socket.getaddrinfo(allow, None, proto=socket.IPPROTO_TCP)
        }
    except (OSError, UnicodeError) as err:
        raise SaltInvocationError(f"cannot resolve allow {allow!r}: {err}")
    for name, path in (("ssl_cert", ssl_cert), ("ssl_key", ssl_key), ("ssl_ca", ssl_ca)):
        if not path or not os.path.isfile(path):
            raise SaltInvocationError(f"{name} {path!r} does not exist")
    settings, _ = _connection_settings(_connection_args(connection_args), _lookup)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ssl_ca)
    context.load_cert_chain(ssl_cert, ssl_key)
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        listener = socket.create_server((bind, port))
    except OSError as err:
        raise CommandExecutionError(f"cannot listen on {bind}:{port}: {err}")
    with listener:
        conn, address = streaming.accept_replica(listener, context, allow, allowed, expect, timeout)
    with conn:
        try:
            streaming.send_frame(conn, b"H", json.dumps({"source": __opts__.get("id")}).encode())
            conn.settimeout(streaming.READY_WAIT)
            kind, _ = streaming.read_frame(conn, limit=4096)
        except (OSError, CommandExecutionError) as err:
            raise CommandExecutionError(
                f"the replica {address} was not ready within {streaming.READY_WAIT}s: {err}"
            ) from None
        if kind != b"R":
            raise CommandExecutionError(f"the replica {address} sent {kind!r} instead of ready")
        sent, gtid = streaming.send_backup(conn, settings, idle_timeout)
    return {"peer": address, "caller": caller, "bytes": sent, "gtid": gtid}


def _fresh_server_check(connection_args):
    """Refuse a running server that holds databases or replicates already."""
    with _connect(**connection_args) as conn:
        databases = [next(iter(row.values())) for row in _query(conn, "SHOW DATABASES", doing="SHOW DATABASES")]
        row = sql.default_connection(_replica_rows(conn))
        busy = []
        for name in databases:
            if name.lower() in sql.SYSTEM_DATABASES:
                continue
            tables = _query(
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


def _dump_into(spec, dump_user, dump_password, connection_args, timeout):
    """mysqldump of the source over TLS piped into the local server; the dump sets gtid_slave_pos."""
    local, _ = _connection_settings(_connection_args(connection_args), _lookup)
    remote = {
        "host": spec["master_host"],
        "port": spec["master_port"],
        "user": dump_user,
        "password": dump_password,
        "ssl-ca": spec["ssl_ca"],
        "ssl-cert": spec["ssl_cert"],
        "ssl-key": spec["ssl_key"],
        "ssl-verify-server-cert": True if spec["ssl_verify"] else None,
    }
    dump_bin = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    client_bin = shutil.which("mariadb") or shutil.which("mysql")
    if not dump_bin or not client_bin:
        raise CommandExecutionError("mariadb-dump and mariadb are needed (Debian package mariadb-client)")
    with tempfile.TemporaryDirectory(prefix="rolestack-dump-") as work:
        source_cnf = streaming.write_private(work, "source.cnf", streaming.option_file({"client": remote}))
        local_cnf = streaming.write_private(
            work, "local.cnf", streaming.option_file({"client": streaming.client_options(local)})
        )
        dump = [
            dump_bin,
            f"--defaults-file={source_cnf}",
            "--single-transaction",
            "--master-data=1",
            "--gtid",
            "--all-databases",
            "--routines",
            "--events",
            "--triggers",
            "--flush-privileges",
            "--hex-blob",
        ]
        load = [client_bin, f"--defaults-file={local_cnf}", "--init-command=SET SESSION sql_log_bin=0"]
        streaming.pipe(work, ("mariadb-dump", dump), ("loading the dump", load), timeout, "the dump")


class _Publish(threading.Thread):
    """
    The peer publish of serve_backup_stream on the source (salt's ``publish.publish``, allowed by the master's
    ``peer`` configuration), in the background: the source answers when the stream is over.
    """

    def __init__(self, minion, args, timeout):
        super().__init__(daemon=True)
        # looked up here, in the caller's loader context; the loaded function sets it up again in the thread
        if "publish.publish" not in __salt__:
            raise CommandExecutionError("publish.publish is not available: this minion cannot ask its source")
        self.publish = __salt__["publish.publish"]
        self.minion, self.args, self.timeout = minion, args, timeout
        self.answer, self.error = None, None

    def run(self):
        try:
            self.answer = self.publish(
                self.minion,
                "mariadb_replication.serve_backup_stream",
                arg=self.args,
                tgt_type="list",
                timeout=self.timeout,
            )
        except Exception as err:  # pylint: disable=broad-except  # any failure: the source did not serve
            self.error = err

    def describe(self):
        if self.error is not None:
            return f"the publish failed: {self.error}"
        return streaming.publish_disagrees(self.answer, self.minion, None) or f"it answered {self.answer!r}"


def _stream_source(source_minion, master_host):
    """The db peer ``source_minion`` is (exactly its inventory name), checked to be the ``master_host`` too."""
    peer = _db_peer(source_minion)
    if peer is None:
        raise SaltInvocationError(
            f"source_minion {source_minion!r} is not a db peer of this host (rolestack:db:peers names: a host's "
            "minion id is its inventory name)"
        )
    if streaming.name_key(master_host) not in {
        streaming.name_key(peer[key]) for key in ("name", "fqdn", "address") if peer.get(key)
    }:
        raise SaltInvocationError(
            f"master_host {master_host} is not the name, FQDN or address of source_minion {source_minion}: the "
            "stream would come from another host than the one asked to serve it"
        )
    return peer


def provision_replica(
    master_host,
    master_user,
    master_password,
    ssl_ca,
    ssl_cert=None,
    ssl_key=None,
    master_port=3306,
    method="mariabackup",
    stream_port=None,
    source_socket=None,
    dump_user=None,
    dump_password=None,
    datadir=None,
    service="mariadb",
    start_command=None,
    owner="mysql",
    overwrite_fresh=False,
    ssl_verify=True,
    use_gtid="slave_pos",
    connect_retry=10,
    timeout=600,
    source_minion=None,
    replica_address=None,
    idle_timeout=None,
    **connection_args,
):
    """
    Make this server a replica of ``master_host`` starting from a copy of the source's data, and start
    replicating (``configure_replica`` with the same arguments). Refuses a server holding data or already
    replicating. Returns ``{"method", "datadir", "gtid_slave_pos", "moved_aside", "pid", "replica"}``, and for
    mariabackup the ``seconds`` each step took (stop, move_aside, copy, prepare, chown, start).

    CLI Example:

    .. code-block:: bash

        # on the source first (in the background): salt db1 mariadb_replication.serve_backup_stream 4444 ...
        salt db2 mariadb_replication.provision_replica db1.example repl 's3cret' /etc/mysql/tls/ca.pem \\
            ssl_cert=/etc/mysql/tls/client.pem ssl_key=/etc/mysql/tls/client.key stream_port=4444 \\
            overwrite_fresh=True

    method
        ``mariabackup`` (default): the local server is stopped, its data directory must be empty (or a
        fresh installation, moved aside to ``<datadir>.pre-provision-<time>`` with ``overwrite_fresh``), the
        backup is extracted into it with ``mbstream -x``, prepared, given to ``owner``, the server started
        and ``gtid_slave_pos`` set from the backup's binlog info. The backup comes either from
        ``serve_backup_stream`` running on the source (``stream_port``: one TLS connection to
        ``master_host:stream_port`` with ``ssl_cert``/``ssl_key``, the source checked against ``ssl_ca``) or,
        for a source on this same host, straight from a local mariabackup of ``source_socket``.

        The stream's TLS handshake, and the source's word that it accepted this replica, come BEFORE anything
        changes here: when the source cannot be reached (retried for ``timeout`` seconds, at most
        MAX_STREAM_TIMEOUT), its certificate does not verify, or it refuses this replica, the server keeps
        running and its data directory is untouched. Either side gives up when the stream makes no progress for
        ``idle_timeout`` seconds (default 60, at most MAX_IDLE_TIMEOUT).

    source_minion / replica_address
        With ``stream_port``: the source's minion id (exactly its inventory name, a name in this host's pillar
        ``rolestack:db:peers``; ``master_host`` must be its name, FQDN or address). This function then starts
        the stream itself through salt's peer publish of ``serve_backup_stream`` (the source uses the db role's
        own port, certificates and CA; ``replica_address``, when given, is passed as ``allow`` and must be this
        host's pillar address there) and requires its answer to agree with the stream received: an empty or
        failed answer is a failure.

        ``mysqldump``: the local server keeps running (it must hold no databases); ``mariadb-dump
        --single-transaction --master-data=1 --gtid --all-databases`` of the source, over TLS as
        ``dump_user`` (needs SELECT, SHOW VIEW, TRIGGER, EVENT and BINLOG MONITOR globally; MariaDB takes
        the position from its consistent snapshot, no FLUSH TABLES WITH READ LOCK), is loaded without binary logging and sets ``gtid_slave_pos``.

    datadir
        This server's data directory; defaults to the running server's ``@@datadir``. Required when the
        server is not running (never guessed: it is moved aside or filled).

    service / start_command
        How to stop and start the local server: the Salt service (``mariadb``), or, with ``service=None``,
        SQL ``SHUTDOWN`` to stop and ``start_command`` (a command running the server in the background, e.g.
        ``mariadbd --defaults-file=...``) to start; the started process id is returned as ``pid``.
    """
    spec = sql.replica_spec(
        master_host,
        master_user,
        master_password,
        master_port,
        ssl_ca,
        ssl_cert,
        ssl_key,
        ssl_verify,
        use_gtid,
        connect_retry,
    )
    timeout = float(timeout)
    if method == "mysqldump":
        if not dump_user or not dump_password:
            raise SaltInvocationError("method=mysqldump needs dump_user and dump_password (an account on the source)")
        _fresh_server_check(connection_args)
        _dump_into(spec, dump_user, dump_password, connection_args, timeout)
        result = {"method": method, "datadir": None, "moved_aside": None, "pid": None}
    elif method == "mariabackup":
        if (stream_port is None) == (source_socket is None):
            raise SaltInvocationError("method=mariabackup needs exactly one of stream_port or source_socket")
        if stream_port is not None:
            stream_port = sql.validate_port(stream_port, "stream_port")
            if not ssl_cert or not ssl_key:
                raise SaltInvocationError("the backup stream needs this replica's ssl_cert and ssl_key")
            idle_timeout = streaming.seconds(
                idle_timeout, "idle_timeout", streaming.IDLE_TIMEOUT, streaming.MAX_IDLE_TIMEOUT
            )
            if source_minion is not None:
                _stream_source(source_minion, spec["master_host"])
        elif source_minion is not None:
            raise SaltInvocationError("source_minion is for the backup stream (stream_port)")
        if service is None and not start_command:
            raise SaltInvocationError("with service=None, give start_command")
        running = _server_up(connection_args)
        if datadir is None:
            # never guessed: a wrong directory here would be moved aside and overwritten
            if not running:
                raise SaltInvocationError("the server is not running: give its datadir explicitly")
            with _connect(**connection_args) as conn:
                datadir = _query(conn, "SELECT @@datadir AS d", (), "reading datadir")[0]["d"]
        if not os.path.isabs(datadir):
            raise SaltInvocationError(f"datadir must be an absolute path, not {datadir!r}")
        datadir = os.path.normpath(datadir)
        if running:
            _fresh_server_check(connection_args)
        fresh = streaming.check_datadir(datadir, overwrite_fresh)
        seconds, mark = {}, [time.monotonic()]

        def took(what):
            now = time.monotonic()
            seconds[what] = round(now - mark[0], 3)
            mark[0] = now

        stream = publishing = None
        where = f"{spec['master_host']}:{stream_port}"
        if stream_port is not None:
            # the source must answer, verify and accept this replica before anything here changes
            wait = min(timeout, streaming.MAX_STREAM_TIMEOUT)
            if source_minion is not None:
                args = [f"timeout={wait:g}", f"idle_timeout={idle_timeout:g}"]
                if replica_address:
                    args.append(f"allow={replica_address}")
                publishing = _Publish(source_minion, args, timeout)
                publishing.start()
            try:
                stream = streaming.open_stream(
                    spec["master_host"], stream_port, ssl_ca, ssl_cert, ssl_key, wait, publishing
                )
            except CommandExecutionError as err:
                raise CommandExecutionError(
                    f"{err} (nothing on this host was changed: the server runs, {datadir} is untouched)"
                ) from err
            took("handshake")
        moved_aside = None
        mode = 0o750
        try:
            _stop_server(service, connection_args, timeout=120)
            took("stop")
            if fresh:
                mode = os.stat(datadir).st_mode & 0o7777
                moved_aside = f"{datadir}.pre-provision-{time.strftime('%Y%m%d%H%M%S')}"
                try:
                    # a copy when a rename cannot be done (a directory of an overlayfs lower layer: EXDEV)
                    shutil.move(datadir, moved_aside)
                except OSError as err:
                    raise CommandExecutionError(
                        f"cannot move the fresh {datadir} aside to {moved_aside}: {err}"
                    ) from err
            os.makedirs(datadir, mode=mode, exist_ok=True)
        except BaseException:
            if stream is not None:
                stream.close()  # the source, waiting for "ready", gives up
            raise
        took("move_aside")
        try:
            if stream is not None:
                trailer = streaming.stream_backup_into(datadir, stream, where, idle_timeout)
                if publishing is not None:
                    publishing.join(60)
                    why = publishing.error and publishing.describe()
                    why = why or streaming.publish_disagrees(publishing.answer, source_minion, trailer)
                    if why:
                        raise CommandExecutionError(f"{source_minion} did not confirm the stream: {why}")
            else:
                source = {"unix_socket": source_socket}
                source_settings, _ = _connection_settings(source, lambda name: None)
                streaming.local_backup_into(datadir, source_settings, timeout)
            took("copy")
            gtid = streaming.backup_gtid(datadir)
            streaming.prepare(datadir, timeout)
            took("prepare")
            streaming.chown_tree(datadir, owner)
            took("chown")
        except CommandExecutionError as err:
            aside = f"; the previous data directory is {moved_aside}" if moved_aside else ""
            raise CommandExecutionError(f"{err} ({datadir} is incomplete and the server is stopped{aside})") from err
        pid = _start_server(service, start_command, connection_args, timeout=120)
        took("start")
        with _connect(**connection_args) as conn:
            _query(conn, "STOP SLAVE", doing="STOP SLAVE")
            _query(conn, "RESET SLAVE ALL", doing="RESET SLAVE ALL")
            _query(conn, "SET GLOBAL gtid_slave_pos = %s", (gtid,), "SET GLOBAL gtid_slave_pos")
        result = {"method": method, "datadir": datadir, "moved_aside": moved_aside, "pid": pid, "seconds": seconds}
    else:
        raise SaltInvocationError(f"method must be mariabackup or mysqldump, not {method!r}")

    configure_replica(
        spec["master_host"],
        spec["master_user"],
        spec["master_password"],
        spec["master_port"],
        spec["ssl_ca"],
        spec["ssl_cert"],
        spec["ssl_key"],
        spec["ssl_verify"],
        spec["use_gtid"],
        spec["connect_retry"],
        **connection_args,
    )
    with _connect(**connection_args) as conn:
        result["gtid_slave_pos"] = _query(conn, "SELECT @@gtid_slave_pos AS p", (), "reading gtid_slave_pos")[0]["p"]
    result["replica"] = start_replica(timeout=30, **connection_args)
    return result
