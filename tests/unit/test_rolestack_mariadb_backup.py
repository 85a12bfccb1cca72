"""
The copies' util (``_utils/rolestack_mariadb_backup.py``): the backup's binlog position and the option files that
carry the commands' credentials (mariabackup, mbstream and mysqldump run for real in
tests/functional/test_mariadb_replication.py and test_backup_stream_security.py).
"""

import pytest
import rolestack_mariadb_backup as backup
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

# ---- the backup's binlog position and option files


def test_binlog_gtid():
    assert backup.binlog_gtid("mysql-bin.000001\t1020\t0-1-4\n") == "0-1-4"
    assert backup.binlog_gtid("mysql-bin.000001\t1020\t0-1-4,1-2-9") == "0-1-4,1-2-9"
    assert backup.binlog_gtid("mysql-bin.000001\t328\t") == ""
    with pytest.raises(CommandExecutionError):
        backup.binlog_gtid("garbage")


def test_option_file_quotes_values():
    text = backup.option_file(
        {"client": {"user": "dump", "password": "a#b\"c\\d'e", "socket": None, "ssl-verify-server-cert": True}}
    )
    assert text == '[client]\nuser="dump"\npassword="a#b\\"c\\\\d\'e"\nssl-verify-server-cert\n'
    with pytest.raises(SaltInvocationError):
        backup.option_file({"client": {"password": "two\nlines"}})


# ---- the backup stream's overlap of reading and writing ------------------------------------------------------


def _fake_copy(monkeypatch, position="0-1-5", fail=None):
    """local_backup_into and prepare replaced by writers of a data directory (the real ones: functional tier)."""

    def copy(datadir, settings, timeout):
        if fail == "backup":
            raise CommandExecutionError("mariabackup failed (1): boom")
        with open(f"{datadir}/xtrabackup_binlog_info", "w", encoding="utf-8") as handle:
            handle.write(f"bin.000001\t42\t{position}\n")

    def prepare(datadir, timeout):
        if fail == "prepare":
            raise CommandExecutionError("mariabackup --prepare failed (1): boom")
        open(f"{datadir}/prepared", "w").close()

    monkeypatch.setattr(backup, "local_backup_into", copy)
    monkeypatch.setattr(backup, "prepare", prepare)


def test_a_prepared_backup_is_swapped_in_and_the_previous_one_removed(monkeypatch, tmp_path):
    directory = tmp_path / "db"
    _fake_copy(monkeypatch, "0-1-5")
    first = backup.take_prepared_backup(str(directory), {}, 10, now=1_800_000_000)
    assert first["gtid"] == "0-1-5" and first["removed"] == []
    assert (directory / "latest").resolve() == directory / "backup-20270115T080000Z"
    assert (directory / "latest" / "gtid").read_text() == "0-1-5\n"
    assert (directory / "latest" / "data" / "prepared").exists()
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    _fake_copy(monkeypatch, "0-1-9")
    second = backup.take_prepared_backup(str(directory), {}, 10, now=1_800_000_060)
    assert second["removed"] == ["backup-20270115T080000Z"]
    assert sorted(p.name for p in directory.iterdir()) == ["backup-20270115T080100Z", "latest"]
    assert (directory / "latest" / "gtid").read_text() == "0-1-9\n"


@pytest.mark.parametrize("fail", ["backup", "prepare", "no position"])
def test_a_failed_backup_leaves_the_previous_one_and_raises(monkeypatch, tmp_path, fail):
    directory = tmp_path / "db"
    _fake_copy(monkeypatch, "0-1-5")
    backup.take_prepared_backup(str(directory), {}, 10, now=1_800_000_000)
    _fake_copy(monkeypatch, "", fail=fail)
    if fail == "no position":  # no binlog info at all: no GTID to record
        monkeypatch.setattr(backup, "local_backup_into", lambda datadir, settings, timeout: None)
    with pytest.raises(CommandExecutionError):
        backup.take_prepared_backup(str(directory), {}, 10, now=1_800_000_060)
    assert sorted(p.name for p in directory.iterdir()) == ["backup-20270115T080000Z", "latest"]
    assert (directory / "latest" / "gtid").read_text() == "0-1-5\n"
