"""
A db source's consistent backup before the pull, for real: a private MariaDB (log_bin, GTID) holding rows, an rsync
daemon on 127.0.0.1 with the configuration rolestack_backup.source_pillar renders for a db host (the read-only
module's ``pre-xfer exec``), its hook pointing at a script that runs ``salt-call rolestack_db_backup.dump`` (what
rolestack-db-backup.service runs) against that server, into the directory standing for the host's
/var/backups/rolestack/db. The backup host's engine (rolestack_backup.run, a masterless minion) pulls it.
"""

import os
import pwd
import shutil
import subprocess

import pytest
import rolestack_backup as logic
import rolestack_inventory as inv
from salt.exceptions import CommandExecutionError

from tests.functional.test_backup_engine import engine  # noqa: F401 (the backup host's engine, a fixture)
from tests.support.paths import EXAMPLE_INVENTORY
from tests.support.paths import LOADER_DIRS
from tests.support.paths import REPO
from tests.support.services import PrivateMariaDB
from tests.support.services import PrivateRsyncd

pytestmark = pytest.mark.skipif(
    not shutil.which("rsync") or not shutil.which("mariabackup") or os.geteuid() != 0,
    reason="needs rsync, mariabackup and root",
)

SECRET = "example-rsync-backup-0123456789"
HOST = "db2"


@pytest.fixture(scope="module")
def database(service_factory):
    """A private MariaDB with binary logs (GTID positions), a table and three rows."""
    server = service_factory("mariadb", server_id=12, extra_config="log-bin = mysql-bin\nbinlog_format = ROW\n")
    server.sql("CREATE DATABASE IF NOT EXISTS shop")
    server.sql("CREATE TABLE IF NOT EXISTS shop.orders (id INT PRIMARY KEY, item VARCHAR(40)) ENGINE=InnoDB")
    server.sql("REPLACE INTO shop.orders VALUES (1, 'apple'), (2, 'pear'), (3, 'plum')")
    return server


class DbSource:
    """The db host: its tree (its /), the daemon with the db host's rendered config, and the dump's hook."""

    def __init__(self, base, socket):
        self.tree = base / "host-db2"
        (self.tree / "etc").mkdir(parents=True)
        (self.tree / "etc/hostname").write_text("db2\n")
        self.dump_dir = self.tree / logic.DB_DUMP_DIR.lstrip("/")
        conf = base / "salt-conf"
        conf.mkdir()
        dirs = "".join(f"{key}: [{value[0]}]\n" for key, value in LOADER_DIRS.items())
        (conf / "minion").write_text(
            f"id: {HOST}\nroot_dir: {base / 'salt-root'}\nfile_client: local\nuser: root\next_pillar: []\n" + dirs
        )
        self.hook_log = base / "hook.log"
        self.hook = base / "db-backup-hook"
        self.socket = socket
        self.write_hook(socket)
        self.hook.chmod(0o755)
        # the daemon's configuration, exactly as the inventory derives it for a db host (its addresses replaced)
        derived = inv.derive(inv.load_yaml(EXAMPLE_INVENTORY.read_text()))["hosts"][HOST]
        config = derived["backup"]["source"]["config"]
        assert f"pre-xfer exec = {logic.DB_PRE_XFER}\n" in config
        self.secrets = base / "rsyncd-db2.secrets"
        self.secrets.write_text(f"{logic.USER}:{logic.host_secret(SECRET, HOST)}\n")
        self.secrets.chmod(0o600)
        config = config.replace("hosts allow = 10.10.10.4", "hosts allow = 127.0.0.1")
        config = config.replace("path = /\n", f"path = {self.tree}\n")
        config = config.replace(logic.SOURCE_SECRETS_FILE, str(self.secrets))
        config = config.replace(logic.DB_PRE_XFER, str(self.hook))
        self.config = base / "rsyncd-db2.conf"
        self.config.write_text(config)
        self.daemon = PrivateRsyncd(base, self.config)

    def write_hook(self, socket):
        """The hook: rolestack-db-backup.service's command, for this test's server and tree (a log of each run)."""
        self.hook.write_text(
            "#!/bin/sh\n"
            f"echo run >> {self.hook_log}\n"
            f"exec {REPO}/.venv/bin/salt-call -c {self.hook.parent / 'salt-conf'} --local --retcode-passthrough "
            f"--log-level=warning --out=json rolestack_db_backup.dump directory={self.dump_dir} "
            f"connection_unix_socket={socket} owner=mysql\n"
        )

    def entry(self):
        return {
            "name": HOST,
            "fqdn": f"{HOST}.production.wpdn",
            "address": "127.0.0.1",
            "port": self.daemon.port,
            "paths": ["/etc", logic.DB_DUMP_DIR],
            "database": True,
            "io_timeout": logic.DB_IO_TIMEOUT_S,
        }


@pytest.fixture
def db_source(tmp_path, database):
    source = DbSource(tmp_path, database.socket)
    source.daemon.start()
    yield source
    source.daemon.stop()


def _runs(source):
    return source.hook_log.read_text().count("run") if source.hook_log.exists() else 0


def test_a_pull_gets_a_prepared_backup_with_the_rows_and_the_gtid(db_source, engine, database, test_root):  # noqa: F811
    position = database.sql("SELECT @@gtid_binlog_pos")[0][0]
    assert position, "the private server writes binary logs"
    module = engine([db_source])
    record = module.run()[HOST]
    assert record["result"] == "ok", record
    assert _runs(db_source) == 1  # the daemon ran the hook before the transfer
    snapshot = module.root / HOST / record["snapshot"] / logic.DB_DUMP_DIR.lstrip("/")
    latest = snapshot / "latest"
    assert latest.is_symlink() and (latest / "gtid").read_text() == f"{position}\n"
    checkpoints = (latest / "data/xtrabackup_checkpoints").read_text()  # 10.11: log-applied once prepared
    assert checkpoints.split("\n")[0] in ("backup_type = log-applied", "backup_type = full-prepared"), checkpoints
    assert (snapshot / "latest" / "data").stat().st_uid == pwd.getpwnam("mysql").pw_uid
    # the pulled data directory starts as a server holding the rows
    scratch = PrivateMariaDB(test_root, server_id=99)
    shutil.copytree(latest / "data", scratch.datadir, symlinks=True)
    subprocess.run(["chown", "-R", "mysql:mysql", str(scratch.root)], check=True)
    scratch.start()
    try:
        rows = scratch.sql("SELECT id, item FROM shop.orders ORDER BY id")
        assert rows == ((1, "apple"), (2, "pear"), (3, "plum"))
    finally:
        scratch.stop()
    # a second pull takes a new backup; the previous one is gone from the host (only 'latest' and its target)
    database.sql("INSERT INTO shop.orders VALUES (4, 'fig')")
    record = module.run(prune=False)[HOST]
    assert record["result"] == "ok" and _runs(db_source) == 2, record
    entries = sorted(path.name for path in db_source.dump_dir.iterdir() if not path.name.startswith("."))
    assert len(entries) == 2 and entries[-1] == "latest", entries
    new_position = database.sql("SELECT @@gtid_binlog_pos")[0][0]
    snapshot = module.root / HOST / record["snapshot"] / logic.DB_DUMP_DIR.lstrip("/")
    assert (snapshot / "latest/gtid").read_text() == f"{new_position}\n" and new_position != position


def test_a_failing_dump_fails_the_pull_and_keeps_the_previous_backup(db_source, engine, tmp_path):  # noqa: F811
    module = engine([db_source])
    good = module.run()[HOST]
    assert good["result"] == "ok", good
    kept = os.readlink(db_source.dump_dir / "latest")
    db_source.write_hook(tmp_path / "no-such.sock")  # the dump cannot reach the server: mariabackup fails
    with pytest.raises(CommandExecutionError, match=r"host=db2 result=failed .*pre-xfer exec returned failure"):
        module.run()
    assert _runs(db_source) == 2
    assert module.snapshots(HOST)["snapshots"] == [good["snapshot"]], "the backup host keeps its snapshot"
    status = module.status()[HOST]
    assert status["last_snapshot"] == good["snapshot"] and status["last_result"] == "failed", status
    assert os.readlink(db_source.dump_dir / "latest") == kept and (db_source.dump_dir / kept / "gtid").exists()
    assert sorted(path.name for path in db_source.dump_dir.iterdir() if not path.name.startswith(".")) == [
        kept,
        "latest",
    ], "the failed run's directory is removed"


def test_a_refused_client_never_starts_a_dump(db_source, engine):  # noqa: F811
    module = engine([db_source], secret="wrong-rsync-backup-9876543210")
    with pytest.raises(CommandExecutionError, match=r"host=db2 result=failed .*auth failed on module"):
        module.run()
    assert _runs(db_source) == 0, "the hook runs only after the daemon accepted the backup host"
