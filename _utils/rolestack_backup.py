"""
The backup role's engine (docs/roles/backup.md): pure logic and the I/O that needs no Salt dunder.

The backup host pulls each other host over rsync (a read-only daemon module on the source, ``hosts allow`` = the
backup host, a per-host secret) into ``<root>/<host>/<snapshot>``, with ``--link-dest`` against the previous
snapshot (unchanged files are hard links and cost no space). Here:

- what each host backs up: :data:`HOST_PATHS` for every host, :data:`ROLE_PATHS` per role, plus the inventory's
  ``backup.paths`` per role; :func:`validate` of the inventory's ``backup`` key (called by the inventory util's
  ``validate``), :func:`derive` (the backup host's ``rolestack:backup`` additions);
- snapshot names (:func:`snapshot_name`, :func:`next_name`: UTC, sortable, unique) and the ``.partial`` name a
  pull writes to, renamed to the final name only when the pull succeeded;
- retention (:func:`plan_retention`: newest per day / ISO week / month in the last N of each, the newest good
  snapshot always kept, partials never counted);
- the rsync argv (:func:`pull_command`, :func:`restore_command`, :func:`filter_rules`), the source's daemon
  configuration (:func:`render_source_config`), the per-host secret (:func:`host_secret`);
- the result record and its one-line log form (:func:`result_line`), the last-success status file (JSON,
  :func:`update_status`, :func:`read_status`, :func:`write_status`), the run lock (:class:`RunLock`);
- the sha256 manifest written beside each snapshot and :func:`verify_manifest`.

Used by ``_modules/rolestack_backup.py`` and the inventory util. Unit tests: tests/unit/test_rolestack_backup.py.
"""

import datetime
import errno
import fcntl
import hashlib
import hmac
import json
import os
import posixpath
import re
import stat

import rolestack_systemd as systemd
from rolestack_elastic import MOUNT_PATH as ELASTIC_MOUNT
from rolestack_inventory_schema import ROLES
from rolestack_inventory_schema import _check_mapping
from rolestack_inventory_schema import _fmt
from rolestack_inventory_schema import _key
from rolestack_inventory_schema import _kind
from rolestack_inventory_schema import _optional_mapping
from rolestack_rsync import PATH_RE  # one definition of a path's characters and of 'a path inside another'
from rolestack_rsync import _nested

# --- what is backed up -------------------------------------------------------------------------------------------

# where the db role writes its consistent database backup (mariabackup, prepared) before the pull takes it
DB_DUMP_DIR = "/var/backups/rolestack/db"
CA_DIR = "/etc/pki/rolestack"  # the salt host's CA (rolestack_inventory.CA_DIR; a unit test keeps them equal)
DKIM_DIR = "/etc/opendkim/keys"
HOST_PATHS = ("/etc",)  # every host
ROLE_PATHS = {"db": (DB_DUMP_DIR,), "salt": ("/srv", CA_DIR), "mail": (DKIM_DIR,)}

ROOT = "/srv/backup"  # on the backup host: <root>/<host>/<snapshot>
MODULE = "rolestack-backup"  # the source's read-only daemon module (path /, filtered to the host's paths)
RESTORE_MODULE = "rolestack-restore"  # the source's write-only module for restores (same filter)
USER = "backup"  # the daemon user of both modules
# the sources' backup daemon: its own port and configuration (the salt host's rsync daemon for its modules has 873
# and /etc/rsyncd.conf: docs/roles/salt.md), started with --config and --port
PORT = 8873
RSYNC_DEFAULT_PORT = 873
TIMEOUT_S = 6 * 3600  # a whole pull or restore
IO_TIMEOUT_S = 600  # rsync --timeout: no data for that long
# a db source's pull: its daemon's pre-xfer exec takes the database backup first (rolestack-db-backup.service), and
# rsync sends nothing until it is done: the client's --timeout must outlast a large mariabackup and its prepare
DB_IO_TIMEOUT_S = 4 * 3600
CONTIMEOUT_S = 20
LOG_FILE = "/var/log/rolestack/backup.log"
MAX_AGE_HOURS = 26  # status: a host without a success for longer is stale
RETENTION_DEFAULTS = {"daily": 7, "weekly": 4, "monthly": 6}
RETENTION_MAX = 3660
SCHEDULE_DEFAULT = "01:30"  # UTC
BACKUP_KEYS = ("paths", "retention", "schedule", "nfs")  # nfs: the NFS share, validated by rolestack_nfs.validate
# never backed up: kernel and runtime file systems, the backup tree itself, and the elastic hosts' mount of the backup
# host's NFS share (rolestack_nfs): its snapshots already live on the backup host
FORBIDDEN_PATHS = ("/dev", "/proc", "/run", "/sys", "/tmp", ROOT, ELASTIC_MOUNT)
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")

# --- snapshot names ----------------------------------------------------------------------------------------------

NAME_FORMAT = "%Y-%m-%dT%H%M%SZ"
NAME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{6}Z$")
PARTIAL = ".partial"  # a pull in progress (or failed): never a snapshot
DELETING = ".deleting"  # a snapshot being removed by prune: never a snapshot
MANIFEST = ".sha256"  # <root>/<host>/<snapshot>.sha256, sha256sum's format, paths relative to the snapshot
STATUS_FILE = ".status.json"  # <root>/.status.json
LOCK_FILE = ".lock"  # <root>/.lock
HOST_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
# rsync exit codes taken as success: 24 = files vanished while being read (a live system)
RSYNC_OK = (0, 24)


class BackupError(Exception):
    """A refused or failed backup operation; the message never holds a secret."""


def _path_error(path, value):
    """The problem of one backed-up path, or None."""
    if not isinstance(value, str) or not PATH_RE.match(value) or posixpath.normpath(value) != value:
        return (
            f"{path}: got {_fmt(value)} ({_kind(value)}), expected an absolute, normalized path of letters, digits "
            "and _.@+- such as '/var/www/uploads'"
        )
    for forbidden in FORBIDDEN_PATHS:
        if _nested(value, forbidden) or _nested(forbidden, value):
            return f"{path}: got {value!r}, expected a path outside {', '.join(FORBIDDEN_PATHS)}"
    return None


def validate(inventory):
    """The inventory's optional ``backup`` key: the list of every problem (each naming its key path)."""
    errors = []
    err = errors.append
    spec = _check_mapping("backup", inventory.get("backup"), BACKUP_KEYS, err) or {}
    paths = _optional_mapping("backup.paths", spec.get("paths"), "role name to a list of paths", err)
    for role, listed in paths.items():
        path = f"backup.paths.{_key(role)}"
        if role not in ROLES:
            err(f"{path}: unknown role {_fmt(role)}, expected one of {', '.join(sorted(ROLES))}")
            continue
        if not isinstance(listed, list) or not listed:
            err(f"{path}: got {_kind(listed)}, expected a non-empty list of absolute paths")
            continue
        for index, value in enumerate(listed):
            problem = _path_error(f"{path}[{index}]", value)
            if problem:
                err(problem)
            elif value in listed[:index]:
                err(f"{path}[{index}]: {value!r} listed twice, expected each path once")
    retention = spec.get("retention")
    if retention is not None:
        retention = _check_mapping("backup.retention", retention, tuple(RETENTION_DEFAULTS), err) or {}
        for key, value in retention.items():
            if key in RETENTION_DEFAULTS and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= RETENTION_MAX
            ):
                err(
                    f"backup.retention.{key}: got {_fmt(value)} ({_kind(value)}), expected an integer from 0 to "
                    f"{RETENTION_MAX} (how many {key} snapshots to keep)"
                )
    if "schedule" in spec:
        schedule = spec["schedule"]
        times = schedule if isinstance(schedule, list) else [schedule]
        if not times or any(not isinstance(value, str) or not TIME_RE.match(value) for value in times):
            err(
                f"backup.schedule: got {_fmt(schedule)} ({_kind(schedule)}), expected a time of day 'HH:MM' (UTC) "
                "or a non-empty list of them, such as '01:30'"
            )
        elif len(set(times)) != len(times):
            err(f"backup.schedule: got {_fmt(schedule)}, expected each time once")
    return errors


def minimal_paths(paths):
    """The paths without those inside another listed path, sorted."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(p != other and _nested(p, other) for other in unique)]


def host_paths(roles, additions=None):
    """What a host with ``roles`` backs up: every host's, each role's default and the inventory's additions."""
    paths = list(HOST_PATHS)
    for role in roles:
        paths += ROLE_PATHS.get(role, ())
        paths += (additions or {}).get(role, ())
    return minimal_paths(paths)


def on_calendar(schedule):
    """systemd OnCalendar= values of a schedule ('HH:MM' or a list of them, UTC)."""
    times = schedule if isinstance(schedule, list) else [schedule]
    return [systemd.daily_utc(value) for value in times]


def derive(inventory, entries):
    """
    The backup host's additions to ``rolestack:backup`` from a valid inventory. ``entries``: the derivation's host
    entries (name, fqdn, address, roles); the sources are those with an address and without the backup role.
    """
    spec = inventory.get("backup") or {}
    additions = spec.get("paths") or {}
    schedule = spec.get("schedule", SCHEDULE_DEFAULT)
    sources = [
        {
            "name": entry["name"],
            "fqdn": entry["fqdn"],
            "address": entry["address"],
            "port": PORT,
            "paths": host_paths(entry["roles"], additions),
            # a db host's daemon takes a consistent database backup before it sends anything (source_pillar)
            "database": "db" in entry["roles"],
            "io_timeout": DB_IO_TIMEOUT_S if "db" in entry["roles"] else IO_TIMEOUT_S,
        }
        for entry in entries
        if entry["address"] and "backup" not in entry["roles"]
    ]
    return {
        "root": ROOT,
        "module": MODULE,
        "restore_module": RESTORE_MODULE,
        "user": USER,
        "retention": dict(RETENTION_DEFAULTS, **(spec.get("retention") or {})),
        "schedule": on_calendar(schedule),
        "log_file": LOG_FILE,
        "log_dir": posixpath.dirname(LOG_FILE),
        "max_age_hours": MAX_AGE_HOURS,
        "sources": sources,
        **scheduled_units(on_calendar(schedule)),
    }


TIMER_UNIT = "rolestack-backup.timer"
SERVICE_UNIT = "rolestack-backup.service"


def scheduled_units(calendars):
    """The backup host's timer and the oneshot it starts (``salt-call rolestack_backup.run``): names and texts."""
    managed_by = "rolestack backup role, states/backup/init.sls: edit the inventory's backup.schedule"
    description = "pull every source into a dated snapshot, then prune by retention"
    return {
        "timer_unit": TIMER_UNIT,
        "service_unit": SERVICE_UNIT,
        "timer": systemd.timer_text(description, calendars, managed_by),
        "service": systemd.salt_call_service_text(description, "rolestack_backup.run", managed_by),
    }


def settings(backup):
    """The engine's settings from ``rolestack:backup`` (what :func:`derive` gave), defaults filled in."""
    backup = backup or {}
    out = {
        "root": backup.get("root") or ROOT,
        "module": backup.get("module") or MODULE,
        "restore_module": backup.get("restore_module") or RESTORE_MODULE,
        "user": backup.get("user") or USER,
        "retention": dict(RETENTION_DEFAULTS, **(backup.get("retention") or {})),
        "log_file": backup.get("log_file") or LOG_FILE,
        "max_age_hours": backup.get("max_age_hours") or MAX_AGE_HOURS,
        "timeout": backup.get("timeout") or TIMEOUT_S,
        "sources": {},
    }
    for source in backup.get("sources") or []:
        out["sources"][source["name"]] = dict(
            source, port=source.get("port") or PORT, io_timeout=source.get("io_timeout") or IO_TIMEOUT_S
        )
    return out


def host_secret(secret, host):
    """A source host's own rsync secret, derived from the inventory's rsync_backup_secret (HMAC-SHA256)."""
    return hmac.new(secret.encode(), f"rolestack-backup:{host}".encode(), hashlib.sha256).hexdigest()


# --- snapshot names and retention --------------------------------------------------------------------------------


def _utc(now):
    if isinstance(now, (int, float)):
        return datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    if now.tzinfo is None:
        raise ValueError("now: expected an aware datetime or a POSIX timestamp")
    return now.astimezone(datetime.UTC)


def snapshot_name(now):
    """The snapshot name of a moment: UTC, to the second, sortable as text (``2026-12-02T013000Z``)."""
    return _utc(now).strftime(NAME_FORMAT)


def parse_name(name):
    """The UTC moment of a snapshot name, or None for anything else (a partial, a manifest, a typo)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        return None
    try:
        return datetime.datetime.strptime(name, NAME_FORMAT).replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def next_name(now, existing):
    """The first name at or after ``now`` (by the second) that no snapshot, partial or manifest has taken."""
    moment = _utc(now).replace(microsecond=0)
    taken = {entry.split(".", 1)[0] for entry in existing}
    while snapshot_name(moment) in taken:
        moment += datetime.timedelta(seconds=1)
    return snapshot_name(moment)


def good_snapshots(entries):
    """The snapshot names among directory entries, oldest first (partials and anything else left out)."""
    return sorted(entry for entry in entries if parse_name(entry))


def _months_back(day, count):
    year, month = day.year, day.month
    out = []
    for _ in range(count):
        out.append((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


def plan_retention(entries, retention, now):
    """
    Which snapshots to keep and delete. ``entries``: a host directory's entries (only snapshot names count);
    ``retention``: ``{daily, weekly, monthly}``; ``now``: the moment the windows end at. Kept: the newest snapshot
    of each of the last ``daily`` days (today included), of each of the last ``weekly`` ISO weeks, of each of the
    last ``monthly`` months, and the newest snapshot whatever its age. Returns ``{"keep": [...], "delete": [...],
    "reasons": {name: [why kept]}}``, names oldest first.
    """
    good = good_snapshots(entries)
    if not good:
        return {"keep": [], "delete": [], "reasons": {}}
    retention = dict(RETENTION_DEFAULTS, **(retention or {}))
    today = _utc(now).date()
    reasons = {good[-1]: ["newest"]}
    buckets = (
        ("daily", lambda d: d, [today - datetime.timedelta(days=i) for i in range(retention["daily"])]),
        (
            "weekly",
            lambda d: tuple(d.isocalendar())[:2],
            [tuple((today - datetime.timedelta(weeks=i)).isocalendar())[:2] for i in range(retention["weekly"])],
        ),
        ("monthly", lambda d: (d.year, d.month), _months_back(today, retention["monthly"])),
    )
    labels = {
        "daily": lambda b: b.isoformat(),
        "weekly": lambda b: f"{b[0]}-W{b[1]:02d}",
        "monthly": lambda b: f"{b[0]}-{b[1]:02d}",
    }
    for kind, key, window in buckets:
        newest = {}
        for name in good:  # oldest first: the last one of a bucket wins
            newest[key(parse_name(name).date())] = name
        for bucket in window:
            if bucket in newest:
                reasons.setdefault(newest[bucket], []).append(f"{kind} {labels[kind](bucket)}")
    keep = [name for name in good if name in reasons]
    return {"keep": keep, "delete": [name for name in good if name not in reasons], "reasons": reasons}


# --- rsync commands ----------------------------------------------------------------------------------------------


def filter_rules(paths):
    """
    rsync filter rules selecting exactly ``paths`` (and their parent directories) from a tree rooted at /: the
    client's ``--filter`` options and the source daemon's ``filter`` parameter (which the client cannot override).
    """
    rules = []
    for path in minimal_paths(paths):
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            rule = "+ /" + "/".join(parts[:depth]) + "/"
            if rule not in rules:
                rules.append(rule)
        rules.append(f"+ {path}/***")
    return [*rules, "- *"]


def source_url(source, module, user, path=""):
    """``rsync://<user>@<host>[:port]/<module>/<path>``: the address (or fqdn) and a port other than 873."""
    host = source.get("address") or source["fqdn"]
    port = source.get("port") or PORT
    where = host if port == RSYNC_DEFAULT_PORT else f"{host}:{port}"
    return f"rsync://{user}@{where}/{module}/{path}"


def pull_command(source, config, partial, previous, password_file, rsync="rsync"):
    """
    The argv of one pull: ``rsync -a --delete --numeric-ids --link-dest=<previous> ... rsync://<user>@<host>/
    <module>/ <partial>/`` with ``--password-file``, filtered to the source's paths; ``--timeout`` is the source's
    ``io_timeout`` (a db source's is longer: its daemon backs the database up before sending anything).
    """
    timeout = source.get("io_timeout") or IO_TIMEOUT_S
    argv = [rsync, "-a", "--delete", "--numeric-ids", "--stats", f"--timeout={timeout}"]
    argv.append(f"--contimeout={CONTIMEOUT_S}")
    if previous:
        argv.append(f"--link-dest={previous}")
    argv.append(f"--password-file={password_file}")
    argv += [f"--filter={rule}" for rule in filter_rules(source["paths"])]
    return [*argv, source_url(source, config["module"], config["user"]), partial.rstrip("/") + "/"]


def check_restore_path(path):
    """A path to restore: absolute and normalized (the snapshot holds the tree rooted at /)."""
    if not isinstance(path, str) or not path.startswith("/") or posixpath.normpath(path) != path or "\n" in path:
        raise BackupError(f"path: got {_fmt(path)}, expected an absolute, normalized path such as '/etc/hosts'")
    return path


def restore_command(snapshot_dir, path, target, rsync="rsync", delete=False, password_file=None):
    """
    The argv of a restore of ``path`` from a snapshot directory to ``target``: a local directory (the path is
    recreated under it) or an rsync URL (a source's restore module, rooted at /). ``--relative`` keeps the path.
    """
    check_restore_path(path)
    argv = [rsync, "-a", "--numeric-ids", "--relative", "--stats"]
    if delete:
        argv.append("--delete")
    if password_file:
        argv.append(f"--password-file={password_file}")
    source = snapshot_dir.rstrip("/") + "/." + path
    if path == "/":
        source = snapshot_dir.rstrip("/") + "/./"
    return [*argv, source, target if target.startswith("rsync://") else target.rstrip("/") + "/"]


def render_source_config(config, backup_address, secrets_file, root="/", restore=True, pre_xfer=None):
    """
    A source host's rsync daemon configuration: the read-only module the backup host pulls from and (``restore``)
    the write-only module it restores into, both rooted at ``root``, reading/writing as root (numeric ids), only
    from ``backup_address``, only the user ``config["user"]`` with the host's secret, only the host's paths (daemon
    filter). ``config``: {"module", "restore_module", "user", "paths"}. Without the restore module the backup host
    cannot write to the host at all (restores then go into a directory: ``restore(..., target=...)``).
    ``pre_xfer``: a command the daemon runs (``/bin/sh -c``) before each transfer of the read-only module only, the
    transfer refused when it exits non-zero (a db host's consistent database backup: :data:`DB_PRE_XFER`).
    """
    rules = " ".join(filter_rules(config["paths"]))
    common = [
        f"    path = {root}",
        "    uid = root",
        "    gid = root",
        "    use chroot = yes",
        "    numeric ids = yes",
        f"    auth users = {config['user']}",
        f"    secrets file = {secrets_file}",
        "    hosts deny = *",
        f"    hosts allow = {backup_address}",
        f"    filter = {rules}",
    ]
    lines = [
        "# managed by salt (rolestack backup role): what the backup host may pull and restore. Edit the inventory.",
        "list = no",
        "reverse lookup = no",
        f"timeout = {IO_TIMEOUT_S}",
        "",
        f"[{config['module']}]",
        "    comment = rolestack backup: pulled by the backup host",
        *common,
        "    read only = yes",
    ]
    if pre_xfer:
        lines.append(f"    pre-xfer exec = {pre_xfer}")
    if restore:
        lines += [
            "",
            f"[{config['restore_module']}]",
            "    comment = rolestack backup: restores pushed by the backup host",
            *common,
            "    read only = no",
            "    write only = yes",
        ]
    return "\n".join(lines) + "\n"


SOURCE_CONFIG_FILE = "/etc/rsyncd-backup.conf"
SOURCE_SECRETS_FILE = "/etc/rsyncd-backup.secrets"
SOURCE_SERVICE = "rolestack-backup-source.service"  # the source's daemon (states/backup/source.sls)
DB_BACKUP_SERVICE = "rolestack-db-backup.service"  # a db source's oneshot: rolestack_db_backup.dump
UNIT_DIR = "/etc/systemd/system"
SALT_CALL = "/usr/bin/salt-call"
# the read-only module's hook on a db host: systemd runs one backup at a time (a second start waits for the running
# one), logs it in the journal, and systemctl exits non-zero when it failed, so rsync refuses the transfer
DB_PRE_XFER = f"/bin/systemctl start {DB_BACKUP_SERVICE}"


def render_source_unit(address, port=PORT, config_file=SOURCE_CONFIG_FILE):
    """
    The source's daemon unit: rsync in the foreground on the host's own private address only (a host outside
    ``hosts allow`` still gets no answer from another address). The daemon re-reads its configuration at each
    connection (rsyncd.conf(5)): a changed file needs no restart, a changed unit does.
    """
    return (
        f"# managed by salt (rolestack backup role, states/backup/source.sls): edit the inventory\n"
        "[Unit]\n"
        f"Description=rolestack backup: the rsync daemon the backup host pulls from (port {port})\n"
        "After=network-online.target\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart=/usr/bin/rsync --daemon --no-detach --config={config_file} --port={port} --address={address}\n"
        # the address may not be up yet at boot: the bind fails, systemd tries again
        "Restart=on-failure\n"
        "RestartSec=5\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def render_db_backup_unit():
    """
    A db source's oneshot taking the consistent database backup into :data:`DB_DUMP_DIR` (started by the daemon's
    pre-xfer exec, or by hand: ``systemctl start rolestack-db-backup.service``).
    """
    return (
        "# managed by salt (rolestack backup role, states/backup/source.sls)\n"
        "[Unit]\n"
        f"Description=rolestack backup: a consistent database backup (mariabackup, prepared) into {DB_DUMP_DIR}\n"
        "After=mariadb.service\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={SALT_CALL} --retcode-passthrough --log-level=warning --out=json rolestack_db_backup.dump\n"
        f"TimeoutStartSec={DB_IO_TIMEOUT_S - 600}\n"
    )


def source_pillar(derived, name, backup_address, secret, restore=True):
    """
    What a source host needs for its daemon (``rolestack:backup:source``; docs/roles/backup.md, "Source hosts'
    daemon"): ``derived`` is :func:`derive`'s result, ``secret`` the inventory's rsync_backup_secret. Returns None
    for a host that is no source, else ``{"address", "port", "config_file", "config", "secrets_file", "secrets",
    "service", "unit_file", "unit", "db_backup"}`` (``secrets``: the secrets file's text, the host's own derived
    secret only; ``db_backup``: on a db host, its oneshot's ``service``, ``unit_file``, ``unit`` and ``dir``,
    started by the read-only module's pre-xfer exec; else None).
    """
    source = next((entry for entry in derived["sources"] if entry["name"] == name), None)
    if source is None:
        return None
    spec = {key: derived[key] for key in ("module", "restore_module", "user")}
    spec["paths"] = source["paths"]
    database = source.get("database")
    config = render_source_config(
        spec, backup_address, SOURCE_SECRETS_FILE, restore=restore, pre_xfer=DB_PRE_XFER if database else None
    )
    db_backup = None
    if database:
        unit_file = f"{UNIT_DIR}/{DB_BACKUP_SERVICE}"
        db_backup = {"service": DB_BACKUP_SERVICE, "unit_file": unit_file, "unit": render_db_backup_unit()}
        db_backup["dir"] = DB_DUMP_DIR
    return {
        "address": source["address"],
        "port": source["port"],
        "config_file": SOURCE_CONFIG_FILE,
        "config": config,
        "secrets_file": SOURCE_SECRETS_FILE,
        "secrets": f"{derived['user']}:{host_secret(secret, name)}\n",
        "service": SOURCE_SERVICE,
        "unit_file": f"{UNIT_DIR}/{SOURCE_SERVICE}",
        "unit": render_source_unit(source["address"], source["port"]),
        "db_backup": db_backup,
    }


def firewall_service(backup_address, port=PORT):
    """A source's firewall service (``rolestack:firewall:services``): the daemon's port from the backup host only."""
    return {"name": "rsync-backup", "port": port, "allow": [f"{backup_address}/32"]}


_STATS = {
    "files": r"Number of files: ([0-9,]+)",
    "transferred": r"Number of regular files transferred: ([0-9,]+)",
    "size": r"Total file size: ([0-9,]+) bytes",
    "transferred_bytes": r"Total transferred file size: ([0-9,]+) bytes",
}


def parse_stats(text):
    """The figures of ``rsync --stats`` (LC_ALL=C) a record keeps: files, transferred, size, transferred_bytes."""
    out = {}
    for key, pattern in _STATS.items():
        match = re.search(pattern, text)
        out[key] = int(match.group(1).replace(",", "")) if match else None
    return out


def rsync_error(returncode, stderr, secret=None):
    """One line saying why rsync failed (the daemon's @ERROR if any), never the secret."""
    text = stderr.replace(secret, "<secret>") if secret else stderr
    refusal = re.search(r"@ERROR: [^\n]*", text)
    what = refusal.group(0) if refusal else " ".join(text.split())[-400:]
    if "Unknown module" in what:
        what += " (the daemon also answers so to a host outside the module's hosts allow)"
    return f"rsync exit {returncode}: {what}" if what else f"rsync exit {returncode}"


# --- records, status, lock ---------------------------------------------------------------------------------------


def iso(now):
    return _utc(now).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_line(record):
    """One line per host and run: ``rolestack-backup host=app1 result=ok snapshot=... files=... seconds=...``."""
    keys = ("snapshot", "files", "transferred", "transferred_bytes", "seconds", "error")
    fields = [f"host={record['host']}", f"result={record['result']}"]
    for key in keys:
        value = record.get(key)
        if value is None:
            continue
        value = str(value)
        plain = value and not any(char in value for char in ' "=\\')
        fields.append(f"{key}={value if plain else json.dumps(value)}")
    return "rolestack-backup " + " ".join(fields)


def update_status(status, record):
    """The status mapping after one host's run record: last attempt and result, last success kept on failure."""
    hosts = dict((status or {}).get("hosts") or {})
    entry = dict(hosts.get(record["host"]) or {})
    entry.update(last_attempt=record["finished"], last_result=record["result"], last_error=record.get("error"))
    if record["result"] == "ok":
        entry.update(last_success=record["finished"], last_snapshot=record["snapshot"])
    entry.setdefault("last_success", None)
    entry.setdefault("last_snapshot", None)
    hosts[record["host"]] = entry
    return {"version": 1, "hosts": hosts}


def read_status(path):
    """The status file's mapping (empty when there is none yet)."""
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
    except FileNotFoundError:
        return {"version": 1, "hosts": {}}
    except (OSError, ValueError) as error:
        raise BackupError(f"{path}: unreadable status file ({error})") from None
    if not isinstance(status, dict) or not isinstance(status.get("hosts"), dict):
        raise BackupError(f"{path}: expected a JSON object with 'hosts'")
    return status


def write_status(path, status):
    """Write the status file atomically (a temporary file renamed over it)."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(status, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def health(status, sources, now, max_age_hours):
    """Per host: last success, its age in seconds, and ``ok`` (a success within ``max_age_hours``)."""
    now = _utc(now)
    hosts = (status or {}).get("hosts") or {}
    out = {}
    for name in sorted(set(hosts) | set(sources)):
        entry = dict(hosts.get(name) or {"last_success": None, "last_result": None})
        last = entry.get("last_success")
        age = None
        if last:
            moment = datetime.datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
            age = int((now - moment).total_seconds())
        entry.update(age_seconds=age, in_inventory=name in sources)
        entry["ok"] = age is not None and age <= max_age_hours * 3600 and entry.get("last_result") == "ok"
        out[name] = entry
    return out


class RunLock:
    """
    An exclusive lock on a file (flock: released when the process ends, however it ends) holding the holder's PID.
    A second holder is refused at once, naming the PID that holds it.
    """

    def __init__(self, path):
        self.path = path
        self.handle = None

    def __enter__(self):
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                handle.close()
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise BackupError(f"another backup run holds the lock {self.path} (pid {holder})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc):
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.flush()
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None


# --- manifest ----------------------------------------------------------------------------------------------------


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _escape(name):
    """A file name as sha256sum writes it: with a leading backslash on the line when escaped."""
    if "\\" in name or "\n" in name or "\r" in name:
        return True, name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return False, name


def _unescape(name):
    out, index = [], 0
    while index < len(name):
        char = name[index]
        if char == "\\" and index + 1 < len(name):
            out.append({"n": "\n", "r": "\r", "\\": "\\"}.get(name[index + 1], name[index + 1]))
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def walk_files(top):
    """The regular files under ``top``: (path relative to it, lstat), in a stable order; symlinks not followed."""
    for directory, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(directory, name)
            info = os.lstat(full)
            if stat.S_ISREG(info.st_mode):
                yield os.path.relpath(full, top), info


def build_manifest(snapshot_dir, previous_dir=None, previous=None):
    """
    ``{relative path: sha256}`` of a snapshot's regular files. A file hard-linked to the same path of the previous
    snapshot (the same inode: ``--link-dest`` found it unchanged) takes the previous manifest's digest unread.
    """
    out = {}
    for relative, info in walk_files(snapshot_dir):
        digest = None
        if previous_dir and previous and relative in previous:
            try:
                before = os.lstat(os.path.join(previous_dir, relative))
                if (before.st_ino, before.st_dev) == (info.st_ino, info.st_dev):
                    digest = previous[relative]
            except OSError:
                pass
        out[relative] = digest or _sha256(os.path.join(snapshot_dir, relative))
    return out


def format_manifest(manifest):
    lines = []
    for relative, digest in sorted(manifest.items()):
        escaped, name = _escape(relative)
        lines.append(f"{chr(92) if escaped else ''}{digest}  ./{name}")
    return "\n".join(lines) + ("\n" if lines else "")


def parse_manifest(text):
    """A manifest file's ``{relative path: sha256}`` (sha256sum's format, the paths starting with ./)."""
    out = {}
    for number, line in enumerate(text.splitlines(), 1):
        escaped = line.startswith("\\")
        body = line[1:] if escaped else line
        match = re.match(r"^([0-9a-f]{64})  \./(.+)$", body)
        if not match:
            raise BackupError(f"manifest line {number}: expected '<sha256>  ./<path>'")
        name = _unescape(match.group(2)) if escaped else match.group(2)
        out[name] = match.group(1)
    return out


def verify_manifest(snapshot_dir, manifest):
    """
    A snapshot against its manifest: every listed file present with its digest, no regular file unlisted.
    Returns ``{"ok", "checked", "missing", "changed", "unlisted"}``.
    """
    present = dict(walk_files(snapshot_dir))
    missing = sorted(name for name in manifest if name not in present)
    changed = sorted(
        name
        for name, digest in manifest.items()
        if name in present and _sha256(os.path.join(snapshot_dir, name)) != digest
    )
    unlisted = sorted(name for name in present if name not in manifest)
    return {
        "ok": not (missing or changed or unlisted),
        "checked": len(manifest) - len(missing),
        "missing": missing,
        "changed": changed,
        "unlisted": unlisted,
    }
