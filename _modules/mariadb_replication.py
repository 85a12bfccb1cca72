"""
MariaDB replication for rolestack: GTID replication over verified TLS, the accounts it needs, switching a
server read-only, and provisioning a new replica from its primary.

Written for MariaDB 10.11 (Debian 12); talks to the server with PyMySQL (``salt-pip install PyMySQL``), not
with Salt's ``mysql`` module nor ``saltext-mysql``. The pure logic is in ``_utils/rolestack_mariadb_*.py``.

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

import importlib.util
import logging
import re

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_gtid as gtid
    import rolestack_mariadb_backup as backup
    import rolestack_mariadb_server as server
    import rolestack_mariadb_sql as sql
    import rolestack_mariadb_stream as streaming
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

HAS_PYMYSQL = importlib.util.find_spec("pymysql") is not None

log = logging.getLogger(__name__)

__virtualname__ = "mariadb_replication"


def __virtual__():
    if not HAS_PYMYSQL:
        return (False, "mariadb_replication: PyMySQL is not installed")
    if MISSING_UTIL:
        return (False, f"mariadb_replication: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _parse_gtid(position):
    """
    A GTID position (``"0-1-100,1-2-7"``) as ``{domain_id: (server_id, seq_no)}``. Empty or None is the
    empty position; anything else malformed raises SaltInvocationError.
    """
    return {domain: (server_id, seq) for domain, server_id, seq in gtid.parse(position)}


def _lookup(name):
    return __salt__["config.option"](f"mariadb.{name}", None)


def _settings(connection_args):
    """The PyMySQL settings of the ``connection_*`` keywords (the minion's ``mariadb.*`` filling the gaps), and where."""
    return server.connection_settings(server.connection_args(connection_args), _lookup)


def _connect(**connection_args):
    """Connect with the ``connection_*`` keywords; MariaDB errors inside become CommandExecutionError."""
    return server.connect(*_settings(connection_args))


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
    with _connect(**connection_args) as conn:
        return server.read_status(conn)


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
        return sql.replica_settings_from_row(server.replica_row(conn))


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
        return sql.lag_from_row(server.replica_row(conn) or {})


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


def _peer_variables(connection, what):
    with _connect(**connection) as conn:
        return server.gtid_state(conn, what)


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
    spec = sql.ReplicaSpec.validated(master_host=master_host, master_user=master_user, master_password=master_password,
                                     master_port=master_port, ssl_ca=ssl_ca, ssl_cert=ssl_cert, ssl_key=ssl_key)  # fmt: skip
    return _peer_variables(spec.peer_connection(timeout), master_host)


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
    account = dict(master_user=user, master_password=password, ssl_ca=ssl_ca, ssl_cert=ssl_cert, ssl_key=ssl_key)
    for peer in peers:
        host, peer_port = (peer.get("host"), peer.get("port", port)) if isinstance(peer, dict) else (peer, port)
        spec = sql.ReplicaSpec.validated(master_host=host, master_port=peer_port, **account)
        connection = spec.peer_connection(timeout)
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
    timeout = sql.wait_seconds(timeout)
    with _connect(**connection_args) as conn:
        return server.wait_for_gtid(conn, gtid_pos, timeout)


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
    spec = sql.ReplicaSpec.validated(master_host=master_host, master_user=master_user, master_password=master_password,
                                     master_port=master_port, ssl_ca=ssl_ca, ssl_cert=ssl_cert, ssl_key=ssl_key,
                                     ssl_verify=ssl_verify, use_gtid=use_gtid, connect_retry=connect_retry)  # fmt: skip
    return _configure(spec, start, slave_pos_from_binlog, connection_args)


def _configure(spec, start, slave_pos_from_binlog, connection_args):
    """configure_replica() with validated settings."""
    settings, where = _settings(connection_args)
    server.check_replica_files(settings, spec)
    with server.connect(settings, where) as conn:
        return server.point_at(conn, spec, start, slave_pos_from_binlog)


def start_replica(timeout=0, **connection_args):
    """
    ``START SLAVE``. With ``timeout``, wait that many seconds for both replica threads to run and raise
    with the IO/SQL error if they do not. Returns ``lag()``.

    CLI Example:

    .. code-block:: bash

        salt db2 mariadb_replication.start_replica timeout=30
    """
    with _connect(**connection_args) as conn:
        return server.start_replica(conn, timeout)


def stop_replica(**connection_args):
    """
    ``STOP SLAVE`` (both threads of the default connection). Returns True.

    CLI Example:

    .. code-block:: bash

        salt db2 mariadb_replication.stop_replica
    """
    with _connect(**connection_args) as conn:
        server.query(conn, "STOP SLAVE", doing="STOP SLAVE")
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
        server.query(conn, "STOP SLAVE", doing="STOP SLAVE")
        server.query(conn, "RESET SLAVE ALL" if all else "RESET SLAVE", doing="RESET SLAVE")
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
    sql.check_read_only(enabled, lock_wait_timeout)
    with _connect(**connection_args) as conn:
        changed = server.set_read_only(conn, enabled, lock_wait_timeout)
    return {"read_only": enabled, "changed": changed}


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
        current = server.value(conn, "@@gtid_current_pos", "reading gtid_current_pos")
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
    exclude_users = sql.user_names(exclude_users, "exclude_users")
    with _connect(**connection_args) as conn:
        return server.kill_clients(conn, exclude_users)


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
        except server.Unreachable:
            raise
        except server.MariaDBError:
            # read_only waits for running writes (lock_wait_timeout): kill them, then it is immediate
            killed = kill_client_connections(**connection_args)
            set_read_only(True, **connection_args)
            killed += kill_client_connections(**connection_args)
        return {"fenced": "read_only", "killed": killed}
    except server.Unreachable as err:
        unreachable = err
    __salt__["service.stop"](service)
    if __salt__["service.status"](service):
        raise CommandExecutionError(f"MariaDB is unreachable ({unreachable}) but the {service} service still runs")
    return {"fenced": "stopped", "killed": [], "unreachable": str(unreachable)}


# ---------------------------------------------------------------------------------------------------------
# accounts, databases, grants


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
        return server.user_info(conn, user, host, password)


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
    with _connect(**connection_args) as conn:
        changes = server.ensure_user(conn, user, host, password, wanted, test)
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
        if not server.drop_user(conn, user, host, test):
            return {"changed": False, "changes": {}}
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
        return server.user_hosts(conn, user)


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
    with _connect(**connection_args) as conn:
        changes = server.ensure_grants(conn, user, host, wanted, target, exact, test)
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
    sql.quote_identifier(name)
    for what, value in (("character_set", character_set), ("collate", collate)):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_]+", str(value)):
            raise SaltInvocationError(f"invalid {what} {value!r}")
    with _connect(**connection_args) as conn:
        changes = server.ensure_database(conn, name, character_set, collate, test)
    return {"changed": bool(changes), "changes": changes}


def database_absent(name, test=False, **connection_args):
    """
    Ensure a database does not exist (dropping it and its data). System databases are refused. Returns
    ``{"changed": bool, "changes": {...}}``.

    CLI Example:

    .. code-block:: bash

        salt db1 mariadb_replication.database_absent olddb
    """
    sql.quote_identifier(name)
    if name.lower() in sql.SYSTEM_DATABASES:
        raise SaltInvocationError(f"refusing to drop the system database {name}")
    with _connect(**connection_args) as conn:
        if not server.drop_database(conn, name, test):
            return {"changed": False, "changes": {}}
    return {"changed": True, "changes": {"deleted": name}}


# ---------------------------------------------------------------------------------------------------------
# provisioning a replica: mariabackup (local pipe or one TLS stream from the source) or mysqldump


def _pillar_host():
    host = __salt__["pillar.get"]("rolestack:host", {}, unmask=True)
    return host if isinstance(host, dict) else {}


def _publish_function():
    # looked up here, in the caller's loader context; the loaded function sets it up again in the publish's thread
    if "publish.publish" not in __salt__:
        raise CommandExecutionError("publish.publish is not available: this minion cannot ask its source")
    return __salt__["publish.publish"]


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
    passed = {"port": port, "allow": allow, "ssl_cert": ssl_cert, "ssl_key": ssl_key, "ssl_ca": ssl_ca, "bind": bind,
              "timeout": timeout, "idle_timeout": idle_timeout}  # fmt: skip
    given = {name: value for name, value in passed.items() if value is not None}
    given.update({key: value for key, value in connection_args.items() if not key.startswith("__")})
    role = streaming.role_stream(__opts__.get("mariadb_replication.backup_stream"))
    request = streaming.stream_request(caller, given, role, _pillar_host(), _db_peers() if caller is not None else [])
    # a peer's call backs up this server as the role does (root over the socket): it passes no connection_*
    settings, _ = _settings(connection_args if caller is None else {})
    address, sent, position = streaming.serve(request, settings, __opts__.get("id"))
    return {"peer": address, "caller": caller, "bytes": sent, "gtid": position}


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
    spec = sql.ReplicaSpec.validated(master_host=master_host, master_user=master_user, master_password=master_password,
                                     master_port=master_port, ssl_ca=ssl_ca, ssl_cert=ssl_cert, ssl_key=ssl_key,
                                     ssl_verify=ssl_verify, use_gtid=use_gtid, connect_retry=connect_retry)  # fmt: skip
    timeout = float(timeout)
    settings, where = _settings(connection_args)
    if method == "mysqldump":
        if not dump_user or not dump_password:
            raise SaltInvocationError("method=mysqldump needs dump_user and dump_password (an account on the source)")
        with server.connect(settings, where) as conn:
            server.refuse_data(conn)
        backup.dump_into(spec, dump_user, dump_password, settings, timeout)
        result = {"method": method, "datadir": None, "moved_aside": None, "pid": None}
    elif method == "mariabackup":
        restore = streaming.Restore(datadir=datadir, overwrite_fresh=overwrite_fresh, service=service,
                                        start_command=start_command, owner=owner, stream_port=stream_port,
                                        source_socket=source_socket, source_minion=source_minion,
                                        replica_address=replica_address, idle_timeout=idle_timeout, timeout=timeout)  # fmt: skip
        calls = {"service.stop": service and __salt__["service.stop"], "publish": _publish_function,
                 "service.start": service and __salt__["service.start"], "peers": _db_peers}  # fmt: skip
        result = restore.run(spec, settings, where, calls)
    else:
        raise SaltInvocationError(f"method must be mariabackup or mysqldump, not {method!r}")
    _configure(spec, True, False, connection_args)
    with server.connect(settings, where) as conn:
        result["gtid_slave_pos"] = server.value(conn, "@@gtid_slave_pos", "reading gtid_slave_pos")
    result["replica"] = start_replica(timeout=30, **connection_args)
    return result
