"""
bench/backup's lab part: what a restore costs where it matters, into a freshly replaced VM of a small lab.

  lab_tree_files / lab_tree_bytes     the whole backed-up tree of the restored host (app1: its /etc)
  lab_restore_host_tree_s             app1 replaced by a fresh VM (its highstate done), then every path of its
                                      newest snapshot pushed back with rolestack_backup.restore (the backup host's
                                      command, through app1's restore module), until the last one returned
  lab_restore_db_s                    db2 replaced by a fresh VM, then its newest database backup (a prepared
                                      mariabackup, /var/backups/rolestack/db) restored onto it the same way, a
                                      scratch server started on the restored files and the rows of a marker table
                                      counted: from the restore command to the answer
  lab_restore_db_rows                 the rows counted (the marker table holds ROWS rows)

The snapshots restored are taken first (rolestack_backup.run of app1 and db2). Needs a lab with the backup role
(the small profile): --lab NAME [--keep].
"""

import json
import time

BACKUP = "backup"
ROWS = 1000
SCRATCH = (
    "systemd-run --collect --unit=bench-scratch-db --property=RuntimeDirectory=bench-scratch-db "
    "/usr/sbin/mariadbd --no-defaults --user=root --datadir=/var/backups/rolestack/db/latest/data "
    "--socket=/run/bench-scratch-db/mysqld.sock --skip-networking --skip-grant-tables --skip-slave-start "
    "--pid-file=/run/bench-scratch-db/mysqld.pid && "
    "for i in $(seq 120); do mariadb -S /run/bench-scratch-db/mysqld.sock -e 'SELECT 1' >/dev/null 2>&1 && break; "
    "systemctl -q is-active bench-scratch-db || break; sleep 0.2; done; "
    "mariadb -S /run/bench-scratch-db/mysqld.sock -N -e 'SELECT COUNT(*) FROM bench_backup.marker'"
)


def _backup_call(lab, rolestack_lab, *args):
    proc = rolestack_lab.salt_cmd(lab, "--out=json", "--static", BACKUP, *args, timeout=1800)
    ret = json.loads(proc.stdout)[BACKUP]
    if not isinstance(ret, dict):
        raise SystemExit(f"{' '.join(args)} on {BACKUP}: {ret}")
    return ret


def _restore_all(lab, rolestack_lab, host, paths):
    for path in paths:
        _backup_call(lab, rolestack_lab, "rolestack_backup.restore", host, path)


def lab_figures(lab_name, keep, figure):
    import rolestack_lab  # root, the lab's cache: only in this mode

    lab = rolestack_lab.Lab(lab_name)
    if not (keep and lab.hosts):
        rolestack_lab.cmd_down(lab, True)
        rolestack_lab.cmd_up(lab, "small")
        lab = rolestack_lab.Lab(lab_name)
    masterdb = next(host for host in sorted(lab.hosts) if "masterdb" in lab.hosts[host]["roles"])
    sql = (
        "DROP DATABASE IF EXISTS bench_backup; CREATE DATABASE bench_backup; "
        "CREATE TABLE bench_backup.marker (id INT PRIMARY KEY, value VARCHAR(32)); "
        f"USE bench_backup; INSERT INTO marker SELECT seq, 'bench' FROM seq_1_to_{ROWS};"
    )
    try:
        rolestack_lab.in_host(lab, masterdb, "mariadb", "-e", sql)
        time.sleep(2)  # db2 replicates it
        for host in ("app1", "db2"):
            _backup_call(lab, rolestack_lab, "rolestack_backup.run", f"host={host}")
        pillar = json.loads(rolestack_lab.salt_run(lab, "--out=json", "pillar.show_pillar", BACKUP).stdout)
        sources = {source["name"]: source for source in pillar["rolestack"]["backup"]["sources"]}
        snapshot = _backup_call(lab, rolestack_lab, "rolestack_backup.snapshots", "app1")["snapshots"][-1]
        tree = f"{pillar['rolestack']['backup']['root']}/app1/{snapshot}"
        files, size = rolestack_lab.in_host(
            lab, BACKUP, "sh", "-c", f"find {tree} -type f | wc -l; du -sb {tree}"
        ).stdout.split()[:2]
        figure("lab_tree_files", int(files))
        figure("lab_tree_bytes", int(size))

        rolestack_lab.cmd_replace(lab, "app1")
        lab = rolestack_lab.Lab(lab_name)
        start = time.monotonic()
        _restore_all(lab, rolestack_lab, "app1", sources["app1"]["paths"])
        figure("lab_restore_host_tree_s", time.monotonic() - start)

        rolestack_lab.cmd_replace(lab, "db2")
        lab = rolestack_lab.Lab(lab_name)
        start = time.monotonic()
        _backup_call(lab, rolestack_lab, "rolestack_backup.restore", "db2", "/var/backups/rolestack/db")
        rows = rolestack_lab.in_host(lab, "db2", "sh", "-c", SCRATCH)
        figure("lab_restore_db_s", time.monotonic() - start)
        figure("lab_restore_db_rows", int(rows.stdout.split()[-1]))
    finally:
        rolestack_lab.in_host(lab, "db2", "systemctl", "stop", "bench-scratch-db", check=False)
        rolestack_lab.in_host(lab, masterdb, "mariadb", "-e", "DROP DATABASE IF EXISTS bench_backup", check=False)
        if not keep:
            rolestack_lab.cmd_down(lab, True)
