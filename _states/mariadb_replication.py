"""
MariaDB replication states for rolestack, on top of the ``mariadb_replication`` execution module.

Every state computes what would change first, honours ``test=True`` (result None, "would ..."), changes
only what differs and checks again afterwards. Connection options (``connection_*``) are passed through to
the execution module.

.. code-block:: yaml

    db-replication-user:
      mariadb_replication.replication_user_present:
        - name: repl
        - password: {{ pillar.rolestack.secrets.replication_password }}
        - host: 10.10.10.12
        - ssl_require: X509

    db-replica:
      mariadb_replication.replica_configured:
        - name: db1-masterdb.production.wpdn
        - master_user: repl
        - master_password: ...
        - ssl_ca: /etc/mysql/ssl/ca.pem
        - ssl_cert: /etc/mysql/ssl/client.pem
        - ssl_key: /etc/mysql/ssl/client.key
        - source_minion: db1-masterdb
"""

import logging
import time

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_gtid as gtid
    import rolestack_mariadb_sql as sql
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "mariadb_replication"

# Last_IO_Errno when the source cannot serve the GTID position asked for (forked, or purged binary logs)
ERR_MASTER_FATAL_READING_BINLOG = 1236


def __virtual__():
    if "mariadb_replication.status" not in __salt__:
        return (False, "the mariadb_replication execution module is not available (PyMySQL missing?)")
    if MISSING_UTIL:
        return (False, f"mariadb_replication: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _connection(kwargs):
    return {key: value for key, value in kwargs.items() if key.startswith("connection_")}


def _account_state(name, function, what, kwargs):
    """Shared shape of the *_present/*_absent states: dry run, apply, re-check."""
    ret = _ret(name)
    try:
        planned = __salt__[function](test=True, **kwargs)
        if not planned["changed"]:
            ret["comment"] = f"{what} is already as wanted"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["changes"] = planned["changes"]
            ret["comment"] = f"{what} would be changed"
            return ret
        done = __salt__[function](**kwargs)
        ret["changes"] = done["changes"]
        if __salt__[function](test=True, **kwargs)["changed"]:
            ret["result"] = False
            ret["comment"] = f"{what} was changed but still differs from what was asked"
            return ret
        ret["comment"] = f"{what} changed"
    except (CommandExecutionError, SaltInvocationError) as err:
        ret["result"] = False
        ret["comment"] = f"{what}: {err}"
    return ret


def replication_user_present(name, password, host="%", ssl_require="X509", **kwargs):
    """
    The account replicas log in with exists, with this password, a TLS requirement ``ssl_require`` (``SSL``,
    ``X509`` or ISSUER/SUBJECT conditions; an account without one is refused; the argument is not called
    ``require``, a salt requisite) and ``REPLICATION SLAVE``.

    .. code-block:: yaml

        repl-account-db2:
          mariadb_replication.replication_user_present:
            - name: repl
            - host: 10.0.0.12
            - password: {{ pillar['rolestack']['secrets']['replication_password'] | json }}
            - ssl_require: X509
    """
    args = dict(user=name, password=password, host=host, require=ssl_require, **kwargs)
    return _account_state(
        name, "mariadb_replication.replication_user_present", f"replication account {name}@{host}", args
    )


def user_present(name, password, host="%", ssl_require=None, **kwargs):
    """
    An account exists with this password (and TLS requirement ``ssl_require``, when given).

    .. code-block:: yaml

        shop-app-account:
          mariadb_replication.user_present:
            - name: shop
            - host: 10.0.0.21
            - password: {{ shop_password | json }}
            - ssl_require: SSL
    """
    args = dict(user=name, password=password, host=host, require=ssl_require, **kwargs)
    return _account_state(name, "mariadb_replication.user_present", f"account {name}@{host}", args)


def user_absent_except(name, hosts, **kwargs):
    """
    User ``name`` has no account at any host but ``hosts`` (a list; may be empty): accounts of a managed user
    at hosts that left the platform or lost the role are dropped.

    .. code-block:: yaml

        repl-accounts-elsewhere:
          mariadb_replication.user_absent_except:
            - name: repl
            - hosts: [10.0.0.11, 10.0.0.12]
    """
    args = dict(user=name, hosts=hosts, **kwargs)
    return _account_state(name, "mariadb_replication.user_absent_except", f"accounts of {name} elsewhere", args)


def grant_present(name, host, privileges, database, exact=False, **kwargs):
    """
    The account ``name@host`` holds ``privileges`` on ``database`` (``*`` for global); with ``exact`` True,
    nothing more on that database (other privileges there are revoked).

    .. code-block:: yaml

        shop-app-grants:
          mariadb_replication.grant_present:
            - name: shop
            - host: 10.0.0.21
            - database: shop
            - privileges: [SELECT, INSERT, UPDATE, DELETE]
            - exact: True
    """
    args = dict(user=name, host=host, privileges=privileges, database=database, exact=exact, **kwargs)
    what = f"grants of {name}@{host} on {database}"
    if __opts__["test"]:
        # a dry run of a new account: the account state before this one only said it would create it
        try:
            missing = __salt__["mariadb_replication.user_info"](name, host, **_connection(kwargs)) is None
        except (CommandExecutionError, SaltInvocationError):
            missing = False  # the dry run below reports the error
        if missing:
            ret = _ret(name)
            ret.update(result=None, changes={"granted": privileges, "on": database})
            ret["comment"] = f"{what} would be granted (the account does not exist yet)"
            return ret
    return _account_state(name, "mariadb_replication.grant_present", what, args)


def database_present(name, character_set="utf8mb4", collate=None, **kwargs):
    """
    A database exists with this default character set (and collation).

    .. code-block:: yaml

        shop-database:
          mariadb_replication.database_present:
            - name: shop
            - character_set: utf8mb4
            - collate: utf8mb4_unicode_ci
    """
    args = dict(name=name, character_set=character_set, collate=collate, **kwargs)
    return _account_state(name, "mariadb_replication.database_present", f"database {name}", args)


def read_only(
    name,
    enabled=True,
    peers=None,
    peer_user="repl",
    peer_password=None,
    ssl_ca=None,
    ssl_cert=None,
    ssl_key=None,
    peer_timeout=2,
    masterdb=None,
    **kwargs,
):
    """
    The server's ``read_only`` is ``enabled`` (replicas: True, so only replication writes; the primary: False).
    ``name`` is a label.

    Never two primaries. With ``enabled`` False the server is made writable only when it has no replication
    source configured and no reachable peer is writable; otherwise the state fails, names the db runner and
    changes nothing (also with ``test=True``). With ``enabled`` True and ``peers`` given, a server that is the
    running primary (writable, no source) is made read-only only when a reachable peer is writable: demoting the
    only primary leaves none, and a primary moves through the db runner (``salt-run db.switchover``).

    peers
        The db hosts (``rolestack:db:peers``: ``name``, ``fqdn``, ``server_id``, optionally ``port``); this
        server (its ``server_id``) is left out. Each is asked for its ``read_only`` over verified TLS as
        ``peer_user`` (password ``peer_password``, the CA ``ssl_ca``, the client certificate ``ssl_cert``/
        ``ssl_key``) with a ``peer_timeout``-second connection timeout; one that does not answer is not writable.

    masterdb
        The host the inventory names masterdb, for the messages.

    .. code-block:: yaml

        db-replication-read-only:
          mariadb_replication.read_only:
            - name: replica
            - enabled: True
            - peers: {{ pillar['rolestack']['db']['peers'] | json }}
            - peer_password: {{ pillar['rolestack']['secrets']['replication_password'] | json }}
            - ssl_ca: /etc/mysql/ssl/ca.pem
            - ssl_cert: /etc/mysql/ssl/client.pem
            - ssl_key: /etc/mysql/ssl/client.key
            - masterdb: db1-masterdb
    """
    ret = _ret(name)
    connection = _connection(kwargs)
    try:
        status = __salt__["mariadb_replication.status"](**connection)
        current = bool(status["read_only"])
        if current == bool(enabled):
            ret["comment"] = f"read_only is already {'ON' if enabled else 'OFF'}"
            return ret
        peer_check = dict(peers=peers, user=peer_user, password=peer_password, ssl_ca=ssl_ca, ssl_cert=ssl_cert,
                          ssl_key=ssl_key, timeout=peer_timeout)  # fmt: skip
        refusal = (_read_only_refusal if enabled else _writable_refusal)(status, peer_check, masterdb)
        if refusal:
            ret.update(result=False, comment=refusal)
            return ret
        change = {"read_only": {"old": current, "new": bool(enabled)}}
        if __opts__["test"]:
            ret.update(result=None, changes=change, comment=f"read_only would be set {'ON' if enabled else 'OFF'}")
            return ret
        __salt__["mariadb_replication.set_read_only"](enabled=enabled, **connection)
        if bool(__salt__["mariadb_replication.status"](**connection)["read_only"]) != bool(enabled):
            ret.update(result=False, comment="read_only did not take the new value")
            return ret
        ret.update(changes=change, comment=f"read_only set {'ON' if enabled else 'OFF'}")
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=f"read_only: {err}")
    return ret


def _runner_hint(masterdb):
    return (
        f"Nothing was changed. A primary moves only through the db runner (writes blocked on the old one until the "
        f"new one caught up): salt-run db.switchover {masterdb or '<host>'} (or salt-run state.orchestrate "
        f"orch.db_switchover), or salt-run db.failover when the primary is dead"
    )


def _writable_peers(status, peer_check):
    """The peers that take writes (read_only OFF), this server left out; [] when no peers are given."""
    peers = peer_check["peers"]
    if peers is None:
        return []
    if not isinstance(peers, list):
        raise SaltInvocationError(f"peers must be a list of db hosts (rolestack:db:peers), not {type(peers).__name__}")
    if not peer_check["password"] or not peer_check["ssl_ca"]:
        raise SaltInvocationError("checking the peers needs peer_password and ssl_ca (the replication credentials)")
    others = [
        {"host": peer["fqdn"], **({"port": peer["port"]} if peer.get("port") else {})}
        for peer in peers
        if isinstance(peer, dict) and peer.get("fqdn") and peer.get("server_id") != status.get("server_id")
    ]
    if not others:
        return []
    args = {key: value for key, value in peer_check.items() if key != "peers"}
    found = __salt__["mariadb_replication.peers_read_only"](others, **args)
    return [host for host, read_only in found["read_only"].items() if not read_only]


def _writable_refusal(status, peer_check, masterdb):
    """Why this server must not be made writable (a comment), or None."""
    host = _this_host()
    if status.get("replica_configured"):
        source = status.get("Master_Host") or "a source"
        return (
            f"{host} was not made writable: it replicates from {source} (taking writes while replicating forks the "
            f"data). {_runner_hint(masterdb)}."
        )
    writable = _writable_peers(status, peer_check)
    if writable:
        return (
            f"{host} was not made writable: {', '.join(writable)} take{'s' if len(writable) == 1 else ''} writes "
            f"(two writable primaries fork the data). {_runner_hint(masterdb)}."
        )
    return None


def _read_only_refusal(status, peer_check, masterdb):
    """Why this server, the running primary, must not be made read-only (a comment), or None."""
    if peer_check["peers"] is None or status.get("replica_configured"):
        return None
    if _writable_peers(status, peer_check):
        return None  # two primaries already: the one the inventory does not name masterdb steps down
    return (
        f"{_this_host()} was not made read-only: it is the running primary and no other db host takes writes "
        f"(the inventory names {masterdb or 'another host'} masterdb). {_runner_hint(masterdb)}."
    )


def _differences(current, wanted):
    if not current:
        return {"master_host": {"old": None, "new": wanted["master_host"]}}
    return {
        key: {"old": current.get(key), "new": wanted[key]}
        for key in sql.ReplicaSpec.SHOWN
        if key in wanted and current.get(key) != wanted[key]
    }


def _fresh(status):
    """A server that never wrote or replicated a transaction: safe to overwrite with the source's data."""
    return not status.get("replica_configured") and not status.get("gtid_current_pos")


def replica_configured(
    name,
    master_user,
    master_password,
    ssl_ca,
    ssl_cert=None,
    ssl_key=None,
    master_port=3306,
    source_minion=None,
    provision=True,
    stream_port=4444,
    replica_address=None,
    provision_method="mariabackup",
    timeout=600,
    **kwargs,
):
    """
    This server replicates from ``name`` (the source's DNS name or address, as in its certificate) over TLS
    with the server certificate verified, GTID ``slave_pos``, and both replication threads running.

    A running replica that already matches is left alone: CHANGE MASTER is never re-issued on a healthy
    replica. A fresh server (no transaction of its own, never a replica) is first provisioned from the source
    when ``provision`` is True: ``source_minion`` (the source's minion id: exactly its inventory name, as in
    ``rolestack:db:peers``) is asked, through the salt master's peer interface, to serve one mariabackup stream
    over mutual TLS on ``stream_port`` (the db role's port; the source uses its own certificate, key and CA and
    streams to this host's pillar address only, which ``replica_address`` must be when given). The TLS handshake
    with the source comes before this server is stopped: a source that cannot be reached, does not verify or
    refuses leaves the server running and its data untouched, and says why. The backup is restored and
    replication starts from its GTID position; the source's answer must confirm the stream (an empty answer is a
    failure). ``timeout`` covers the whole provisioning, the stream included.

    .. code-block:: yaml

        db-replication-replica:
          mariadb_replication.replica_configured:
            - name: db1-masterdb.internal.example
            - master_user: repl
            - master_password: {{ pillar['rolestack']['secrets']['replication_password'] | json }}
            - ssl_ca: /etc/mysql/ssl/ca.pem
            - ssl_cert: /etc/mysql/ssl/client.pem
            - ssl_key: /etc/mysql/ssl/client.key
            - source_minion: db1-masterdb
            - replica_address: 10.0.0.12
    """
    ret = _ret(name)
    connection = _connection(kwargs)
    spec = sql.ReplicaSpec(master_host=name, master_user=master_user, master_password=master_password,
                           master_port=int(master_port), ssl_ca=ssl_ca, ssl_cert=ssl_cert, ssl_key=ssl_key)  # fmt: skip
    wanted = spec.shown()
    try:
        status = __salt__["mariadb_replication.status"](**connection)
        current = __salt__["mariadb_replication.replica_settings"](**connection)
        differences = _differences(current, wanted)
        running = status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes"
        if not differences and running:
            ret["comment"] = f"already replicating from {name}"
            return ret
        needs_copy = provision and _fresh(status)
        from_binlog = None
        if not needs_copy:
            # never point a server at a source that lacks transactions it holds (a forked old primary)
            forked = _forked(spec, status)
            if forked:
                ret.update(result=False, comment=forked)
                return ret
            from_binlog = _slave_pos_from_binlog(status)
            if from_binlog:
                differences["gtid_slave_pos"] = from_binlog
        if __opts__["test"]:
            ret["result"] = None
            if needs_copy:
                ret["changes"] = {"provisioned": {"from": name, "method": provision_method}, **differences}
                ret["comment"] = f"would copy {name}'s data ({provision_method}) and replicate from it"
            elif differences:
                ret["changes"] = differences
                ret["comment"] = f"would point replication at {name}" + (
                    f", continuing after its own binary log ({from_binlog['new']})" if from_binlog else ""
                )
            else:
                ret["changes"] = {"started": True}
                ret["comment"] = f"would start replication from {name}"
            return ret
        if needs_copy:
            source = {"minion": source_minion, "port": stream_port, "allow": replica_address}
            ret["changes"]["provisioned"] = _provision(spec, source, provision_method, timeout, connection)
        elif differences:
            __salt__["mariadb_replication.configure_replica"](
                **spec.source_args(), slave_pos_from_binlog=bool(from_binlog), **connection
            )
            ret["changes"].update(differences)
        else:
            __salt__["mariadb_replication.start_replica"](**connection)
            ret["changes"]["started"] = True
        return _check_replicating(ret, name, wanted, connection)
    except (CommandExecutionError, SaltInvocationError, OSError) as err:
        ret["result"] = False
        ret["comment"] = f"replication from {name}: {err}"
        return ret


def _this_host():
    return __opts__.get("id") or "this host"


def _forked(spec, status):
    """
    Why this server must not replicate from ``name`` (a comment), or None: its binary log holds GTIDs the source
    never applied. Only reads: the source's ``gtid_binlog_state`` and ``gtid_slave_pos`` (a source provisioned by
    mariabackup holds what it copied there only) over TLS as the replication account.
    """
    position = status.get("gtid_binlog_pos") or ""
    if not position:
        return None
    host, name = _this_host(), spec.master_host
    try:
        source = __salt__["mariadb_replication.source_binlog_state"](**spec.source_args())
    except CommandExecutionError as err:
        return (
            f"cannot check whether {host} holds transactions {name} never had (its gtid_binlog_pos is {position}), "
            f"so replication was not changed: {err}"
        )
    slave_pos = source.get("gtid_slave_pos") or ""
    errant = __salt__["mariadb_replication.gtid_missing"](position, source["gtid_binlog_state"], slave_pos)
    if not errant:
        return None
    return (
        f"{host} holds transactions the source {name} never had: {', '.join(errant)} ({host}'s gtid_binlog_pos "
        f"{position}; {name}'s gtid_binlog_state {source['gtid_binlog_state'] or 'empty'}, gtid_slave_pos "
        f"{slave_pos or 'empty'}). They were written on "
        f"{host} and never replicated (an old primary that took writes the new one did not receive): its data "
        f"forked, and replicating would stop with error 1236 or lose them. Nothing was changed. salt-run db.rejoin "
        f"{host} refuses it too; " + gtid.REBUILD_HINT.format(host=host)
    )


def _slave_pos_from_binlog(status):
    """
    ``{"old", "new"}`` when this server's binary log is ahead of its ``gtid_slave_pos`` (it wrote transactions
    itself: an old primary, its slave position stale): it must continue after its own last transaction.
    """
    binlog, slave = status.get("gtid_binlog_pos") or "", status.get("gtid_slave_pos") or ""
    if (
        binlog
        and __salt__["mariadb_replication.gtid_compare"](binlog, slave)
        and set(gtid.parse(binlog)) != set(gtid.parse(slave))
    ):
        return {"old": slave, "new": binlog}
    return None


def _provision(spec, source, method, timeout, connection):
    args = dict(
        **spec.source_args(),
        method=method,
        overwrite_fresh=True,
        timeout=timeout,
        **connection,
    )
    if method == "mariabackup":
        if not source["minion"]:
            raise SaltInvocationError("provisioning with mariabackup needs source_minion (the source's minion id)")
        # provision_replica publishes serve_backup_stream to the source itself (the source streams to this host's
        # pillar address only, with the db role's certificates), completes the handshake before it stops this
        # server, and fails unless the source's answer confirms the stream it received
        args.update(stream_port=source["port"], source_minion=source["minion"], replica_address=source["allow"])
    result = __salt__["mariadb_replication.provision_replica"](**args)
    return {"from": spec.master_host, "method": method, "gtid_slave_pos": result.get("gtid_slave_pos")}


def _check_replicating(ret, name, wanted, connection, wait=30):
    """Replication threads up and settings as asked (the IO thread needs a moment to connect)."""
    deadline = time.monotonic() + wait
    while True:
        status = __salt__["mariadb_replication.status"](**connection)
        current = __salt__["mariadb_replication.replica_settings"](**connection)
        running = status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes"
        if running and not _differences(current, wanted):
            ret["comment"] = f"replicating from {name}"
            return ret
        if time.monotonic() > deadline or status.get("Last_IO_Error") or status.get("Last_SQL_Error"):
            ret["result"] = False
            error = status.get("Last_IO_Error") or status.get("Last_SQL_Error") or "threads not running"
            ret["comment"] = f"configured replication from {name}, but it does not run: {error}"
            if status.get("Last_IO_Errno") == ERR_MASTER_FATAL_READING_BINLOG:
                host = _this_host()
                ret["comment"] = (
                    f"configured replication from {name}, but {name} cannot send what {host} asks for (error 1236: "
                    f"{error}): {name}'s binary log lacks transactions {host} holds or needs (a forked old primary, "
                    f"or binary logs purged on {name}). {host} cannot continue from it; "
                    + gtid.REBUILD_HINT.format(host=host)
                )
            return ret
        time.sleep(0.5)


def replication_healthy(name, max_lag_seconds=None, **kwargs):
    """
    Report (never change) this replica's health: the state fails when replication is broken or more than
    ``max_lag_seconds`` behind (default: ``rolestack:db:settings:max_lag_seconds``). ``name`` is a label.

    .. code-block:: yaml

        db-replication-health:
          mariadb_replication.replication_healthy:
            - name: replica
            - max_lag_seconds: 30
    """
    ret = _ret(name)
    try:
        health = __salt__["mariadb_replication.health"](max_lag_seconds=max_lag_seconds, **_connection(kwargs))
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=f"replication health: {err}")
        return ret
    if health["healthy"]:
        ret["comment"] = f"replicating, {health['seconds_behind_master']} s behind its source"
    else:
        ret.update(result=False, comment="replication unhealthy: " + "; ".join(health["problems"]))
    return ret
