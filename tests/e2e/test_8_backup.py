"""
The backup role in the lab (issue 13): the backup host's timer unit pulls every source (db1-masterdb with its
database backup, the salt host's /srv and CA, app1's /etc) into dated snapshots; an unchanged second run adds
almost no disk; a file deleted on app1 comes back with the restore command; the database backup restored into a
scratch MariaDB on the backup host has the rows written before it; a pull from a host that is down fails, is
reported, and leaves the previous snapshot intact.
"""

import secrets

import pytest

BACKUP = "backup"
ROOT = "/srv/backup"


def call(lab, function, *args):
    """A rolestack_backup function on the backup host: its return (a string when it raised)."""
    return lab.salt(BACKUP, f"rolestack_backup.{function}", *args, timeout=900)[BACKUP]


def disk_bytes(lab, host):
    """The bytes every snapshot of ``host`` takes (du counts a file hard-linked between snapshots once)."""
    return int(lab.sh(BACKUP, "du", "-s", "--block-size=1", f"{ROOT}/{host}").stdout.split()[0])


def status(lab):
    return call(lab, "status")


@pytest.fixture(scope="module")
def first_run(lab):
    """The timer's own unit run once (systemctl start waits for the oneshot): every source pulled."""
    assert lab.sh(BACKUP, "systemctl", "is-enabled", "rolestack-backup.timer").stdout.strip() == "enabled"
    proc = lab.sh(BACKUP, "systemctl", "start", "rolestack-backup.service", check=False)
    journal = lab.sh(BACKUP, "journalctl", "-u", "rolestack-backup.service", "-n", "40", "--no-pager").stdout
    assert proc.returncode == 0, journal
    return status(lab)


def test_the_timer_pulls_every_source(lab, first_run):
    sources = sorted(host for host in lab.hosts if host != BACKUP)
    assert sorted(first_run) == sources, first_run
    assert all(entry["ok"] and entry["last_success"] for entry in first_run.values()), first_run
    assert "rolestack-backup host=app1 result=ok" in lab.read(BACKUP, "/var/log/rolestack/backup.log")
    for host, path in [("salt", "srv/git"), ("salt", "etc/pki/rolestack"), ("app1", "etc/passwd"),
                       ("db1-masterdb", "var/backups/rolestack/db")]:  # fmt: skip
        snapshot = first_run[host]["last_snapshot"]
        assert lab.sh(BACKUP, "test", "-e", f"{ROOT}/{host}/{snapshot}/{path}", check=False).returncode == 0, path
    assert call(lab, "verify", "salt")["ok"] is True


def test_an_unchanged_second_run_adds_almost_no_disk(lab, first_run):
    before = disk_bytes(lab, "app1")
    ret = call(lab, "run", "host=app1", "prune=False")  # a run prunes: two of one day keep the later one
    assert isinstance(ret, dict), ret
    after = disk_bytes(lab, "app1")
    assert len(call(lab, "snapshots", "app1")["snapshots"]) >= 2
    # the second snapshot's files are hard links: what it adds is its directories (4 KiB each) and the few
    # files the host changed meanwhile; a copy would double the figure
    assert after - before <= 0.25 * before, (before, after)


def test_a_file_deleted_on_app1_is_restored(lab, first_run):
    path, content = f"/etc/rolestack-e2e-{secrets.token_hex(4)}.conf", secrets.token_hex(16)
    lab.sh("app1", "sh", "-c", f"printf %s {content} > {path} && chmod 0640 {path} && chgrp adm {path}")
    assert isinstance(call(lab, "run", "host=app1"), dict)
    lab.sh("app1", "rm", path)
    ret = call(lab, "restore", "app1", path)
    assert isinstance(ret, dict), ret
    assert lab.read("app1", path) == content
    assert lab.sh("app1", "stat", "-c", "%a %U:%G", path).stdout.strip() == "640 root:adm"
    lab.sh("app1", "rm", path)


def test_a_failed_pull_keeps_the_previous_snapshot_and_is_reported(lab, first_run):
    before = call(lab, "snapshots", "app1")["snapshots"]
    last_success = status(lab)["app1"]["last_success"]
    with lab.unplugged("app1"):
        # forget app1's MAC: the pull then finds it unreachable at once (no ARP answer), as after a while it would
        lab.sh(BACKUP, "ip", "neigh", "flush", "dev", "eth0")
        ret = call(lab, "run", "host=app1")
    assert isinstance(ret, str) and "app1" in ret and "Traceback" not in ret, ret
    assert call(lab, "snapshots", "app1")["snapshots"] == before
    entry = status(lab)["app1"]
    assert entry["last_result"] == "failed" and entry["last_success"] == last_success and not entry["ok"], entry
    assert "rolestack-backup host=app1 result=failed" in lab.read(BACKUP, "/var/log/rolestack/backup.log")
    assert call(lab, "verify", "app1", before[-1])["ok"] is True
    assert isinstance(call(lab, "run", "host=app1"), dict)  # plugged back in: the next run succeeds


def test_the_database_backup_restores_into_a_scratch_instance_with_the_rows(lab, first_run):
    marker = secrets.token_hex(6)
    sql = (
        "CREATE DATABASE IF NOT EXISTS e2e_backup; "
        "CREATE TABLE IF NOT EXISTS e2e_backup.marker (id INT AUTO_INCREMENT PRIMARY KEY, value VARCHAR(32)); "
        f"INSERT INTO e2e_backup.marker (value) VALUES ('{marker}'), ('{marker}'), ('{marker}');"
    )
    lab.sh("db1-masterdb", "mariadb", "-e", sql)
    ret = call(lab, "run", "host=db1-masterdb")
    assert isinstance(ret, dict), ret
    target = "/srv/restore/e2e-db"
    lab.sh(BACKUP, "rm", "-rf", target)
    ret = call(lab, "restore", "db1-masterdb", "/var/backups/rolestack/db", f"target={target}")
    assert isinstance(ret, dict), ret
    # docs/roles/backup.md, "Restore a database": a scratch server on the restored files, no network
    datadir = f"{target}/var/backups/rolestack/db/latest/data"
    script = (
        f"chown -R mysql:mysql {target} && "
        "systemd-run --collect --unit=rolestack-scratch-db --property=User=mysql --property=RuntimeDirectory=scratch-db "
        f"/usr/sbin/mariadbd --no-defaults --datadir={datadir} --socket=/run/scratch-db/mysqld.sock "
        "--skip-networking --skip-grant-tables --skip-slave-start --pid-file=/run/scratch-db/mysqld.pid && "
        "for i in $(seq 60); do mariadb -S /run/scratch-db/mysqld.sock -e 'SELECT 1' >/dev/null 2>&1 && break; "
        "systemctl -q is-active rolestack-scratch-db || break; sleep 1; done; "
        f"mariadb -S /run/scratch-db/mysqld.sock -N -e \"SELECT COUNT(*) FROM e2e_backup.marker WHERE value='{marker}'\""
    )
    try:
        proc = lab.sh(BACKUP, "sh", "-c", script, check=False)
        assert proc.stdout.strip().splitlines()[-1:] == ["3"], proc.stdout + proc.stderr
    finally:
        lab.sh(BACKUP, "systemctl", "stop", "rolestack-scratch-db", check=False)
        lab.sh(BACKUP, "rm", "-rf", target, check=False)
        lab.sh("db1-masterdb", "mariadb", "-e", "DROP DATABASE IF EXISTS e2e_backup", check=False)
