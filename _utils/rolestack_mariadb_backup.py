"""
The copies a new replica starts from (no Salt dunders): the mariabackup, mbstream and mysqldump commands, the
option files that carry their credentials (never their command lines), the data directory checked, moved aside,
prepared and given to the server's user, and the backup's GTID position. The stream that carries a mariabackup
between hosts is ``rolestack_mariadb_stream``.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import time

import rolestack_gtid as gtid
import rolestack_mariadb_sql as sql
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

# where mariabackup writes the binary log position of the backup (10.11: xtrabackup_*, 11.x: mariadb_backup_*)
BINLOG_INFO_FILES = ("mariadb_backup_binlog_info", "xtrabackup_binlog_info")


def option_value(value):
    """A value for a my.cnf-style option file, double-quoted and escaped."""
    text = str(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise SaltInvocationError("option values cannot contain newlines")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def option_file(sections):
    """An option file: ``{"client": {"user": "root", ...}}``; None values are left out."""
    lines = []
    for group, options in sections.items():
        lines.append(f"[{group}]")
        for key, value in options.items():
            if value is None:
                continue
            lines.append(key if value is True else f"{key}={option_value(value)}")
    return "\n".join(lines) + "\n"


def binlog_gtid(text):
    """The GTID position from a mariabackup binlog info file (``file<TAB>pos<TAB>gtid``)."""
    fields = text.strip().split("\t")
    if len(fields) < 2:
        raise CommandExecutionError(f"unexpected content of the backup's binlog info: {text.strip()!r}")
    position = fields[2].strip() if len(fields) > 2 else ""
    gtid.parse(position)
    return position


def client_options(settings):
    """Option-file lines for a client connecting like the PyMySQL ``settings``."""
    password = settings.get("password")
    options = {"user": settings.get("user"), "password": password.decode("utf-8") if password else None}
    if "unix_socket" in settings:
        options["socket"] = settings["unix_socket"]
    else:
        options.update(host=settings["host"], port=settings["port"])
        options.update({name.replace("_", "-"): settings.get(name) for name in ("ssl_ca", "ssl_cert", "ssl_key")})
        if settings.get("ssl_verify_identity"):
            options["ssl-verify-server-cert"] = True
    return options


def write_private(directory, name, text):
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def tail(path, size=2000):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


def backup_command(defaults_file, workdir):
    binary = shutil.which("mariabackup") or shutil.which("mariadb-backup")
    if not binary:
        raise CommandExecutionError("mariabackup is not installed (Debian package mariadb-backup)")
    return [binary, f"--defaults-file={defaults_file}", "--backup", "--stream=mbstream", f"--target-dir={workdir}"]


def extract_command(datadir):
    binary = shutil.which("mbstream")
    if not binary:
        raise CommandExecutionError("mbstream is not installed (Debian package mariadb-backup)")
    return [binary, "-x", "-C", datadir]


def chown_tree(path, owner):
    entry = pwd.getpwnam(owner)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def local_backup_into(datadir, source_settings, timeout):
    """mariabackup of a source on this host piped into ``mbstream -x`` (no network)."""
    with tempfile.TemporaryDirectory(prefix="rolestack-backup-") as work:
        defaults = write_private(work, "backup.cnf", option_file({"mariabackup": client_options(source_settings)}))
        target = os.path.join(work, "target")
        os.mkdir(target)
        pipe(
            work,
            ("mariabackup", backup_command(defaults, target)),
            ("mbstream -x", extract_command(datadir)),
            timeout,
            "the backup",
        )


def pipe(work, producer, consumer, timeout, what):
    """Run producer | consumer (each a (label, argv)); CommandExecutionError with the failing side's stderr."""
    logs = [os.path.join(work, f"pipe-{index}.err") for index in (0, 1)]
    with open(logs[0], "wb") as producer_log, open(logs[1], "wb") as consumer_log:
        first = subprocess.Popen(producer[1], stdout=subprocess.PIPE, stderr=producer_log)
        second = subprocess.Popen(consumer[1], stdin=first.stdout, stderr=consumer_log)
        first.stdout.close()
        try:
            second.wait(timeout)
            first.wait(timeout)
        except subprocess.TimeoutExpired:
            first.kill()
            second.kill()
            raise CommandExecutionError(f"{what} took longer than {timeout}s") from None
    for (label, _argv), process, log in ((producer, first, logs[0]), (consumer, second, logs[1])):
        if process.returncode:
            raise CommandExecutionError(f"{label} failed ({process.returncode}): {tail(log)}")


def prepare(datadir, timeout):
    binary = shutil.which("mariabackup") or shutil.which("mariadb-backup")
    result = subprocess.run(
        [binary, "--prepare", f"--target-dir={datadir}", "--use-memory=256M"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode:
        raise CommandExecutionError(f"mariabackup --prepare failed ({result.returncode}): {result.stderr[-2000:]}")


def backup_gtid(datadir):
    for name in BINLOG_INFO_FILES:
        path = os.path.join(datadir, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                return binlog_gtid(handle.read())
    raise CommandExecutionError(
        "the backup holds no binary log position (is log_bin on on the source?): cannot start replication"
    )


# a consistent database backup kept on the host (the backup role's DB_DUMP_DIR): <directory>/backup-<UTC time>/
# holds "data" (a prepared mariabackup: a data directory) and next to it "gtid" (its GTID position, one line);
# <directory>/latest is a symlink to the complete one, swapped atomically (rename of a new link over it)
LATEST = "latest"
BACKUP_PREFIX = "backup-"
DATA = "data"
GTID_FILE = "gtid"


def take_prepared_backup(directory, settings, timeout, owner=None, now=None):
    """
    A consistent, prepared mariabackup of the local server (``settings``: its PyMySQL connection settings) into a
    new ``<directory>/backup-<UTC time>/data`` with its GTID position in ``.../gtid``, then ``<directory>/latest``
    swapped to it, then the older backups removed. Until the swap, the previous backup and ``latest`` are
    untouched: a failure removes the new directory and raises CommandExecutionError. ``owner``: the data's owner
    (the server's user, so that a copy back is ready to start). Returns ``{"path", "gtid", "seconds",
    "removed"}``.
    """
    steps = Steps()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)  # the databases' contents: root only
    name = BACKUP_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    new = os.path.join(directory, name)
    if os.path.lexists(new):  # a failed run of the same second, never the one latest names
        if os.path.realpath(os.path.join(directory, LATEST)) == os.path.realpath(new):
            raise CommandExecutionError(f"{new} is the latest backup already: try again in a second")
        shutil.rmtree(new)
    os.mkdir(new, 0o700)
    try:
        data = os.path.join(new, DATA)
        os.mkdir(data, 0o700)
        local_backup_into(data, settings, timeout)
        steps.took("backup")
        prepare(data, timeout)
        steps.took("prepare")
        position = backup_gtid(data)
        with open(os.path.join(new, GTID_FILE), "w", encoding="utf-8") as handle:
            handle.write(position + "\n")
        if owner:
            chown_tree(data, owner)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    link = os.path.join(directory, f".{LATEST}.new")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(name, link)
    os.replace(link, os.path.join(directory, LATEST))  # atomic: latest names the old backup or the new one
    removed = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(BACKUP_PREFIX) and entry != name:
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
            removed.append(entry)
    steps.took("swap")
    return {"path": new, "gtid": position, "seconds": steps.seconds, "removed": removed}


def check_datadir(datadir, overwrite_fresh):
    """
    Refuse a data directory holding data. Returns True when it holds a fresh installation that is to be
    moved aside (only with ``overwrite_fresh``), False when it is absent or empty.
    """
    if not os.path.isdir(datadir) or not os.listdir(datadir):
        return False
    entries = os.listdir(datadir)
    databases = [
        entry
        for entry in entries
        if os.path.isdir(os.path.join(datadir, entry))
        and not entry.startswith("#")
        and entry not in sql.SYSTEM_DATABASES
    ]
    if databases:
        raise CommandExecutionError(f"{datadir} holds databases {sorted(databases)}: refusing to provision over data")
    if any(entry == "master.info" or entry.startswith("master-") for entry in entries):
        raise CommandExecutionError(f"{datadir} belongs to a replica already (master.info): refusing")
    if not overwrite_fresh:
        raise CommandExecutionError(
            f"{datadir} is not empty (a fresh installation?): pass overwrite_fresh=True to move it aside"
        )
    return True


def make_room(datadir, fresh):
    """
    Move a ``fresh`` installation in ``datadir`` aside (to ``<datadir>.pre-provision-<time>``), then make sure
    ``datadir`` exists (empty, with the old directory's mode); where the old one went, or None.
    """
    moved_aside = None
    mode = 0o750
    if fresh:
        mode = os.stat(datadir).st_mode & 0o7777
        moved_aside = f"{datadir}.pre-provision-{time.strftime('%Y%m%d%H%M%S')}"
        try:
            # a copy when a rename cannot be done (a directory of an overlayfs lower layer: EXDEV)
            shutil.move(datadir, moved_aside)
        except OSError as err:
            raise CommandExecutionError(f"cannot move the fresh {datadir} aside to {moved_aside}: {err}") from err
    os.makedirs(datadir, mode=mode, exist_ok=True)
    return moved_aside


class Steps:
    """The seconds each step of a provisioning took, each from the end of the one before: ``took("copy")``."""

    def __init__(self):
        self.seconds, self.mark = {}, time.monotonic()

    def took(self, what):
        now = time.monotonic()
        self.seconds[what] = round(now - self.mark, 3)
        self.mark = now


def dump_into(spec, dump_user, dump_password, local_settings, timeout):
    """mysqldump of the source over TLS piped into the local server (``local_settings``); it sets gtid_slave_pos."""
    remote = {
        "host": spec.master_host,
        "port": spec.master_port,
        "user": dump_user,
        "password": dump_password,
        "ssl-ca": spec.ssl_ca,
        "ssl-cert": spec.ssl_cert,
        "ssl-key": spec.ssl_key,
        "ssl-verify-server-cert": True if spec.ssl_verify else None,
    }
    dump_bin = shutil.which("mariadb-dump") or shutil.which("mysqldump")
    client_bin = shutil.which("mariadb") or shutil.which("mysql")
    if not dump_bin or not client_bin:
        raise CommandExecutionError("mariadb-dump and mariadb are needed (Debian package mariadb-client)")
    with tempfile.TemporaryDirectory(prefix="rolestack-dump-") as work:
        source_cnf = write_private(work, "source.cnf", option_file({"client": remote}))
        local_cnf = write_private(work, "local.cnf", option_file({"client": client_options(local_settings)}))
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
        pipe(work, ("mariadb-dump", dump), ("loading the dump", load), timeout, "the dump")
