"""
The db role's consistent database backup for the backup role's pull (docs/roles/backup.md, "Source hosts' daemon"):
a prepared mariabackup of the local server in ``/var/backups/rolestack/db`` (``rolestack_backup.DB_DUMP_DIR``),
taken by ``rolestack-db-backup.service`` (a oneshot running ``salt-call rolestack_db_backup.dump``), which the
source's rsync daemon starts (``pre-xfer exec``) before the backup host pulls that directory. Layout::

    /var/backups/rolestack/db/latest -> backup-<UTC time>   the complete one (swapped atomically)
    /var/backups/rolestack/db/backup-<UTC time>/data/       a prepared mariabackup: a data directory
    /var/backups/rolestack/db/backup-<UTC time>/gtid        its GTID position (gtid_slave_pos of a replica)
    /var/backups/rolestack/db/.lock                         one run at a time (flock, holds the PID)

The server is reached as the db role's modules reach it (``mariadb_replication``): the ``connection_*`` keywords,
else the minion's ``mariadb.*`` configuration, else root over ``/run/mysqld/mysqld.sock``. The copy itself is the
db role's (``_utils/rolestack_mariadb_backup.py``: ``local_backup_into``, ``prepare``, ``backup_gtid``).
"""

import logging
import os

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_backup as engine
    import rolestack_mariadb_backup as copies
    import rolestack_mariadb_server as server
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "rolestack_db_backup"

DEFAULT_TIMEOUT_S = 3 * 3600  # each of the copy and the prepare (the oneshot's own limit is shorter)


def __virtual__():
    if MISSING_UTIL:
        return (False, f"rolestack_db_backup: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _directory(directory):
    directory = directory or engine.DB_DUMP_DIR
    if not isinstance(directory, str) or not os.path.isabs(directory) or os.path.normpath(directory) != directory:
        raise SaltInvocationError(f"directory: got {directory!r:.60}, expected an absolute, normalized path")
    return directory


def dump(directory=None, timeout=None, owner="mysql", **connection_args):
    """
    Take a consistent, prepared mariabackup of the local server into ``<directory>/backup-<UTC time>/data``, its
    GTID position into ``.../gtid``, then point ``<directory>/latest`` at it and remove the older backup. The
    previous backup stays until the new one is complete; a failure leaves it (and ``latest``) as it was and
    raises, so ``salt-call`` exits non-zero (the backup host's pull is then refused and keeps its previous
    snapshot). Returns ``{"path", "gtid", "seconds", "removed"}``.

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_db_backup.dump
        systemctl start rolestack-db-backup.service    # the same, as the rsync daemon's pre-xfer exec runs it

    directory
        Default ``/var/backups/rolestack/db`` (what the backup role pulls from a db host).

    timeout
        Seconds each of the copy and the prepare may take (default 10800).

    owner
        The prepared data's owner (the server's user: a copy back is ready to start); None keeps root.

    The backup runs as the connection account (``connection_*``; root over the socket by default), which needs
    RELOAD, PROCESS, LOCK TABLES and BINLOG MONITOR, and the server needs ``log_bin`` (the GTID position).
    """
    directory = _directory(directory)
    settings, where = server.connection_settings(
        server.connection_args(connection_args), lambda name: __salt__["config.option"](f"mariadb.{name}", None)
    )
    timeout = float(timeout or DEFAULT_TIMEOUT_S)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        with engine.RunLock(os.path.join(directory, ".lock")):
            result = copies.take_prepared_backup(directory, settings, timeout, owner=owner)
    except engine.BackupError as error:
        raise CommandExecutionError(f"rolestack_db_backup: {error}") from None
    except CommandExecutionError as error:
        log.error("rolestack-db-backup result=failed server=%s error=%s", where, error)
        raise CommandExecutionError(f"rolestack_db_backup: the backup of {where} failed: {error}") from None
    log.info("rolestack-db-backup result=ok path=%s gtid=%s", result["path"], result["gtid"])
    return result


def latest(directory=None):
    """
    The complete backup ``dump`` last made: ``{"path", "data", "gtid"}``, or None when there is none yet.

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_db_backup.latest
    """
    directory = _directory(directory)
    link = os.path.join(directory, copies.LATEST)
    if not os.path.islink(link):
        return None
    path = os.path.join(directory, os.readlink(link))
    try:
        with open(os.path.join(path, copies.GTID_FILE), encoding="utf-8") as handle:
            position = handle.read().strip()
    except OSError as error:
        raise CommandExecutionError(f"rolestack_db_backup: {path}: no readable GTID file ({error.strerror})") from None
    return {"path": path, "data": os.path.join(path, copies.DATA), "gtid": position}
