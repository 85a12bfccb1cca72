"""
The backup host's engine (docs/roles/backup.md): pull the other hosts over rsync into dated snapshots, list,
verify, restore and prune them, and report the last success per host.

Everything comes from this host's pillar ``rolestack:backup`` (the inventory util derives the sources, each with
its paths, the root, the retention) and the secret ``rolestack:secrets:rsync_backup_secret`` (each source's own
secret is derived from it: ``rolestack_backup.host_secret``). Layout on this host::

    <root>/.lock                         the run lock (flock; holds the running PID)
    <root>/.status.json                  last attempt and last success per host (health checks)
    <root>/<host>/<snapshot>/            a good snapshot: the host's paths, rooted at / (etc/..., srv/...)
    <root>/<host>/<snapshot>.sha256      its manifest (sha256sum format, paths relative to the snapshot)
    <root>/<host>/<snapshot>.partial/    a pull in progress or failed: never listed, restored or pruned

The logic lives in ``_utils/rolestack_backup.py``.
"""

import logging
import os
import shutil
import subprocess
import tempfile
import time

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_backup as logic
    import rolestack_inventory as inventory
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "rolestack_backup"

SECRET = "rsync_backup_secret"


def __virtual__():
    if MISSING_UTIL:
        return (False, f"rolestack_backup: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _config():
    rolestack = inventory.minion_pillar(__salt__["pillar.get"])
    backup = rolestack.get("backup") or {}
    if "sources" not in backup:
        raise CommandExecutionError(
            "rolestack_backup: no rolestack:backup:sources in this host's pillar: the engine runs on the backup host"
        )
    config = logic.settings(backup)
    config["secret"] = (rolestack.get("secrets") or {}).get(SECRET)
    return config


def _check_host(host):
    if not isinstance(host, str) or not logic.HOST_RE.match(host):
        raise SaltInvocationError(f"host: got {type(host).__name__} {host!r:.40}, expected an inventory host name")
    return host


def _entries(directory):
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _snapshot_dir(config, host, snapshot):
    """The directory of ``snapshot`` ('latest': the newest) of ``host``; CommandExecutionError when there is none."""
    host_dir = os.path.join(config["root"], _check_host(host))
    good = logic.good_snapshots(_entries(host_dir))
    if not good:
        raise CommandExecutionError(f"rolestack_backup: no snapshot of {host} in {host_dir}")
    if snapshot in (None, "latest"):
        snapshot = good[-1]
    if snapshot not in good:
        raise CommandExecutionError(
            f"rolestack_backup: no snapshot {snapshot!r} of {host} (newest: {good[-1]}; list: "
            f"rolestack_backup.snapshots {host})"
        )
    return snapshot, os.path.join(host_dir, snapshot)


def _log(config, line):
    log.info(line)
    try:
        os.makedirs(os.path.dirname(config["log_file"]), mode=0o755, exist_ok=True)
        with open(config["log_file"], "a", encoding="utf-8") as handle:
            handle.write(f"{logic.iso(time.time())} {line}\n")
    except OSError as error:
        log.warning("rolestack_backup: cannot write %s: %s", config["log_file"], error)


def _rsync():
    found = shutil.which("rsync")
    if not found:
        raise CommandExecutionError("rolestack_backup: rsync is not installed on this host")
    return found


def _run_rsync(argv, timeout=None):
    env = {key: value for key, value in os.environ.items() if key != "RSYNC_PASSWORD"}
    env["LC_ALL"] = "C"
    try:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise logic.BackupError(f"rsync did not finish within {timeout} s") from None
    except OSError as error:
        raise logic.BackupError(f"running rsync: {error.strerror}") from None


def _password_file(directory, secret):
    path = os.path.join(directory, "secret")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    return path


def _pull(config, source, rsync):
    """Pull one source into a new snapshot; the run record (result ok/failed), never raising for the pull."""
    started = time.time()
    name = source["name"]
    host_dir = os.path.join(config["root"], name)
    record = {"host": name, "started": logic.iso(started), "snapshot": None}
    try:
        if not config["secret"]:
            raise logic.BackupError(f"no secrets:{SECRET} in this host's pillar")
        os.makedirs(host_dir, mode=0o700, exist_ok=True)
        entries = _entries(host_dir)
        good = logic.good_snapshots(entries)
        previous = os.path.join(host_dir, good[-1]) if good else None
        snapshot = logic.next_name(started, entries)
        partial = os.path.join(host_dir, snapshot + logic.PARTIAL)
        stale = sorted(entry for entry in entries if entry.endswith(logic.PARTIAL))
        if stale:  # a failed pull's files: resumed from (renamed), older ones removed
            os.rename(os.path.join(host_dir, stale[-1]), partial)
            for entry in stale[:-1]:
                shutil.rmtree(os.path.join(host_dir, entry))
        else:
            os.mkdir(partial, 0o755)
        with tempfile.TemporaryDirectory(prefix=".secret-", dir=config["root"]) as private:
            password_file = _password_file(private, logic.host_secret(config["secret"], name))
            argv = logic.pull_command(source, config, partial, previous, password_file, rsync=rsync)
            done = _run_rsync(argv, timeout=config["timeout"])
        if done.returncode not in logic.RSYNC_OK:
            raise logic.BackupError(logic.rsync_error(done.returncode, done.stderr))
        record.update(logic.parse_stats(done.stdout))
        try:
            previous_manifest = _read_manifest(previous) if previous else None
        except logic.BackupError as error:  # every file is hashed again; verify reports that snapshot's manifest
            log.warning("rolestack_backup: %s%s: %s", previous, logic.MANIFEST, error)
            previous_manifest = None
        manifest = logic.build_manifest(partial, previous, previous_manifest)
        temporary = os.path.join(host_dir, snapshot + logic.PARTIAL + logic.MANIFEST)
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(logic.format_manifest(manifest))
        os.replace(temporary, os.path.join(host_dir, snapshot + logic.MANIFEST))
        os.rename(partial, os.path.join(host_dir, snapshot))  # only now is it a snapshot
        record.update(result="ok", snapshot=snapshot)
    except (logic.BackupError, OSError) as error:
        message = str(error) if isinstance(error, logic.BackupError) else f"{error.filename}: {error.strerror}"
        record.update(result="failed", error=message)
    record["finished"] = logic.iso(time.time())
    record["seconds"] = round(time.time() - started, 2)
    return record


def _read_manifest(snapshot_dir):
    try:
        with open(snapshot_dir + logic.MANIFEST, encoding="utf-8") as handle:
            return logic.parse_manifest(handle.read())
    except FileNotFoundError:
        return None


def run(host=None, prune=True):
    """
    Pull one host (``host``) or every source of ``rolestack:backup:sources`` into a new dated snapshot each, with
    ``--link-dest`` against the host's previous snapshot. A pull writes to ``<snapshot>.partial`` and is renamed
    to its final name only when rsync succeeded: a failed pull leaves the previous snapshots as they were (its
    partial is resumed by the next run). Then, when ``prune``, prunes each host that succeeded by retention.
    One run at a time: a second run is refused at once, naming the PID of the run holding the lock. Each host's
    result is one line in the log file and in the status file (``rolestack_backup.status``).

    Returns ``{host: record}``; raises CommandExecutionError naming the failed hosts (after the others ran).

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_backup.run
        salt-call rolestack_backup.run host=app1
    """
    config = _config()
    if host is not None and _check_host(host) not in config["sources"]:
        raise SaltInvocationError(
            f"host: {host!r} is not a backup source (sources: {', '.join(sorted(config['sources'])) or 'none'})"
        )
    rsync = _rsync()
    os.makedirs(config["root"], mode=0o700, exist_ok=True)
    records = {}
    try:
        with logic.RunLock(os.path.join(config["root"], logic.LOCK_FILE)):
            status_path = os.path.join(config["root"], logic.STATUS_FILE)
            for name in [host] if host else sorted(config["sources"]):
                record = _pull(config, config["sources"][name], rsync)
                status = logic.update_status(logic.read_status(status_path), record)
                logic.write_status(status_path, status)
                _log(config, logic.result_line(record))
                if record["result"] == "ok" and prune:
                    record["pruned"] = _prune_host(config, name, dry_run=False)["deleted"]
                records[name] = record
    except logic.BackupError as error:
        raise CommandExecutionError(f"rolestack_backup.run: {error}") from None
    except OSError as error:  # the status file, a prune
        raise CommandExecutionError(f"rolestack_backup.run: {error.filename}: {error.strerror}") from None
    failed = [logic.result_line(record) for record in records.values() if record["result"] != "ok"]
    if failed:
        raise CommandExecutionError(f"rolestack_backup.run: {len(failed)} host(s) failed: " + "; ".join(failed))
    return records


def snapshots(host):
    """
    The good snapshots of ``host`` (oldest first; also for a host no longer in the inventory) and any partial
    (a pull in progress or failed, never restorable).

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_backup.snapshots app1
    """
    config = _config()
    entries = _entries(os.path.join(config["root"], _check_host(host)))
    return {
        "host": host,
        "snapshots": logic.good_snapshots(entries),
        "partial": sorted(entry for entry in entries if entry.endswith(logic.PARTIAL)),
        "in_inventory": host in config["sources"],
    }


def verify(host, snapshot="latest"):
    """
    Verify a snapshot against the sha256 manifest written when it was taken (``<snapshot>.sha256``): every file
    present with its digest, no file added. This checks the snapshot itself (bit rot, an edit of a hard-linked
    file, which would change every snapshot sharing it), not whether the host changed since.

    Returns ``{"host", "snapshot", "ok", "checked", "missing", "changed", "unlisted"}``.

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_backup.verify app1
        salt-call rolestack_backup.verify app1 2026-12-02T013000Z
    """
    config = _config()
    snapshot, directory = _snapshot_dir(config, host, snapshot)
    try:
        manifest = _read_manifest(directory)
    except logic.BackupError as error:
        raise CommandExecutionError(f"rolestack_backup.verify: {directory}{logic.MANIFEST}: {error}") from None
    if manifest is None:
        raise CommandExecutionError(f"rolestack_backup.verify: no manifest {directory}{logic.MANIFEST}")
    return {"host": host, "snapshot": snapshot, **logic.verify_manifest(directory, manifest)}


def restore(host, path, snapshot="latest", target=None, delete=False):
    """
    Restore ``path`` (a file or directory, absolute as on the host) of ``host`` from a snapshot (default: the
    newest). Without ``target``: pushed back to the same place on the host, through its restore module (the host
    must still be a source). With ``target``: copied into that local directory of this host, as
    ``<target><path>``. Files newer on the target are overwritten; ``delete=True`` also removes files the
    snapshot does not have under ``path``.

    Returns ``{"host", "snapshot", "path", "target", "transferred"}``. Raises CommandExecutionError.

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_backup.restore app1 /etc/nginx/sites-available/wiki
        salt-call rolestack_backup.restore app1 /etc snapshot=2026-12-02T013000Z target=/srv/restore/app1
    """
    config = _config()
    try:
        logic.check_restore_path(path)
    except logic.BackupError as error:
        raise SaltInvocationError(str(error)) from None
    snapshot, directory = _snapshot_dir(config, host, snapshot)
    if not os.path.lexists(os.path.join(directory, path.lstrip("/"))):
        raise CommandExecutionError(f"rolestack_backup.restore: {path} is not in snapshot {snapshot} of {host}")
    rsync = _rsync()
    with tempfile.TemporaryDirectory(prefix=".secret-", dir=config["root"]) as private:
        if target is None:
            source = config["sources"].get(host)
            if source is None:
                raise CommandExecutionError(
                    f"rolestack_backup.restore: {host} is no backup source any more: restore into a directory "
                    "(target=...) and copy from there"
                )
            if not config["secret"]:
                raise CommandExecutionError(f"rolestack_backup.restore: no secrets:{SECRET} in this host's pillar")
            password_file = _password_file(private, logic.host_secret(config["secret"], host))
            destination = logic.source_url(source, config["restore_module"], config["user"])
        else:
            if not isinstance(target, str) or not os.path.isabs(target):
                raise SaltInvocationError(f"target: got {target!r:.60}, expected an absolute directory path")
            os.makedirs(target, mode=0o700, exist_ok=True)
            password_file, destination = None, target
        argv = logic.restore_command(directory, path, destination, rsync, bool(delete), password_file)
        try:
            done = _run_rsync(argv, timeout=config["timeout"])
        except logic.BackupError as error:
            raise CommandExecutionError(f"rolestack_backup.restore: {error}") from None
    if done.returncode:
        raise CommandExecutionError(f"rolestack_backup.restore: {logic.rsync_error(done.returncode, done.stderr)}")
    result = {"host": host, "snapshot": snapshot, "path": path, "target": target or f"{host}:{path}"}
    result["transferred"] = logic.parse_stats(done.stdout)["transferred"]
    _log(config, f"rolestack-backup restore host={host} snapshot={snapshot} path={path} target={result['target']}")
    return result


def _prune_host(config, host, dry_run):
    host_dir = os.path.join(config["root"], host)
    entries = _entries(host_dir)
    plan = logic.plan_retention(entries, config["retention"], time.time())
    if not dry_run:
        for name in plan["delete"]:
            doomed = os.path.join(host_dir, name + logic.DELETING)
            os.rename(os.path.join(host_dir, name), doomed)  # never seen as a snapshot again, even half removed
            shutil.rmtree(doomed)
            try:
                os.unlink(os.path.join(host_dir, name + logic.MANIFEST))
            except FileNotFoundError:
                pass
        for entry in entries:  # a removal that was interrupted
            if entry.endswith(logic.DELETING):
                shutil.rmtree(os.path.join(host_dir, entry), ignore_errors=True)
    return {"keep": plan["keep"], "deleted": plan["delete"], "reasons": plan["reasons"]}


def prune(host=None, dry_run=False):
    """
    Delete the snapshots retention does not keep, for ``host`` or every host directory under the root (also hosts
    no longer in the inventory: their snapshots age out like any other). Kept: the newest snapshot of each of the
    last ``daily`` days, ``weekly`` ISO weeks and ``monthly`` months (``rolestack:backup:retention``), and the
    newest snapshot of each host whatever its age. Partials are left to the next run.

    Returns ``{host: {"keep", "deleted", "reasons"}}`` (with ``dry_run=True``: what would be deleted).

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_backup.prune dry_run=True
        salt-call rolestack_backup.prune app1
    """
    config = _config()
    hosts = [_check_host(host)] if host else sorted(e for e in _entries(config["root"]) if logic.HOST_RE.match(e))
    try:
        with logic.RunLock(os.path.join(config["root"], logic.LOCK_FILE)):
            return {name: _prune_host(config, name, bool(dry_run)) for name in hosts}
    except logic.BackupError as error:
        raise CommandExecutionError(f"rolestack_backup.prune: {error}") from None
    except OSError as error:
        raise CommandExecutionError(f"rolestack_backup.prune: {error.filename}: {error.strerror}") from None


def status():
    """
    The last success per host (from ``<root>/.status.json``): last success and snapshot, last attempt, its result
    and error, the age of the last success and ``ok`` (a success within ``rolestack:backup:max_age_hours``, 26 by
    default). Every current source is listed, also one never backed up; a host no longer in the inventory is
    listed with ``in_inventory: False``.

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_backup.status
    """
    config = _config()
    try:
        current = logic.read_status(os.path.join(config["root"], logic.STATUS_FILE))
    except logic.BackupError as error:
        raise CommandExecutionError(f"rolestack_backup.status: {error}") from None
    return logic.health(current, config["sources"], time.time(), config["max_age_hours"])


def purge(host, confirm=False):
    """
    Remove every snapshot of a host that is no longer in the inventory (on purpose: ``prune`` keeps its newest
    snapshot forever). Refused for a current source, and without ``confirm=True``.

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_backup.purge oldapp3 confirm=True
    """
    config = _config()
    if _check_host(host) in config["sources"]:
        raise CommandExecutionError(f"rolestack_backup.purge: {host} is a backup source: remove it from the inventory")
    if confirm is not True:
        raise SaltInvocationError("rolestack_backup.purge: removes every snapshot of the host: pass confirm=True")
    host_dir = os.path.join(config["root"], host)
    if not os.path.isdir(host_dir):
        raise CommandExecutionError(f"rolestack_backup.purge: no {host_dir}")
    try:
        with logic.RunLock(os.path.join(config["root"], logic.LOCK_FILE)):
            removed = logic.good_snapshots(_entries(host_dir))
            shutil.rmtree(host_dir)
    except logic.BackupError as error:
        raise CommandExecutionError(f"rolestack_backup.purge: {error}") from None
    _log(config, f"rolestack-backup purge host={host} snapshots={len(removed)}")
    return {"host": host, "removed": removed}
