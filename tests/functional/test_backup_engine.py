"""
The backup engine (_modules/rolestack_backup.py) against REAL rsync daemons on 127.0.0.1: each source host is a
directory tree standing for its / (etc/, srv/, home/...), served by ``rsync --daemon`` with the configuration
rolestack_backup.render_source_config renders (read-only pull module and write-only restore module, both filtered
to the host's paths, hosts allow 127.0.0.1, the host's derived secret), its own port, stopped by PID. The module
runs in a masterless minion ``backup`` whose pillar is what the inventory util derives, pointed at those daemons.
"""

import datetime
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest
import rolestack_backup as logic
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

from tests.support.paths import REPO
from tests.support.services import PrivateRsyncd
from tests.support.services import wait_for

SECRET = "example-rsync-backup-0123456789"
WRONG = "wrong-rsync-backup-9876543210"
PATHS = ["/etc", "/srv/www"]

pytestmark = pytest.mark.skipif(
    not shutil.which("rsync") or os.geteuid() != 0,
    reason="needs rsync and root (the source daemon chroots and reads as root)",
)


class Source:
    """A source host: its tree (its /), its daemon's config and secrets, and the daemon."""

    def __init__(self, base, name, paths=PATHS, secret=SECRET, allow="127.0.0.1", pull_delay=0):
        self.name = name
        self.tree = base / f"host-{name}"
        for relative, text in {
            "etc/hostname": f"{name}\n",
            "etc/app/app.conf": "setting = 1\n",
            "srv/www/index.html": "<h1>hello</h1>\n",
            "srv/other/not-backed-up.txt": "outside the paths\n",
            "home/user/private.txt": "outside the paths\n",
        }.items():
            path = self.tree / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (self.tree / "etc/app/app.conf").chmod(0o640)
        data = self.tree / "srv/www/data"  # 200 files of 20 kB: what an unchanged run must not copy again
        data.mkdir()
        for index in range(200):
            (data / f"file{index:03d}.bin").write_bytes(os.urandom(20_000))
        self.secrets = base / f"rsyncd-{name}.secrets"
        self.secrets.write_text(f"{logic.USER}:{logic.host_secret(secret, name)}\n")
        self.secrets.chmod(0o600)
        self.config = base / f"rsyncd-{name}.conf"
        spec = {"module": logic.MODULE, "restore_module": logic.RESTORE_MODULE, "user": logic.USER, "paths": paths}
        text = logic.render_source_config(spec, allow, str(self.secrets), root=str(self.tree))
        if pull_delay:  # a pull that takes a while: the daemon runs this before each transfer of the module
            text = text.replace(
                "    read only = yes\n", f"    read only = yes\n    pre-xfer exec = /bin/sleep {pull_delay}\n"
            )
        self.config.write_text(text)
        self.paths = paths
        self.daemon = PrivateRsyncd(base, self.config)

    def entry(self):
        return {
            "name": self.name,
            "fqdn": f"{self.name}.production.wpdn",
            "address": "127.0.0.1",
            "port": self.daemon.port,
            "paths": self.paths,
        }


@pytest.fixture
def sources(tmp_path):
    """make(name) -> a started Source; every daemon is stopped by its PID at the end."""
    made = []

    def make(name, **options):
        source = Source(tmp_path, name, **options)
        source.daemon.start()
        made.append(source)
        return source

    yield make
    for source in made:
        source.daemon.stop()


class Engine:
    """The loaded rolestack_backup functions, and the backup root they work in."""

    def __init__(self, loaders, root):
        self.module = loaders.modules.rolestack_backup
        self.root = root

    def __getattr__(self, name):
        return getattr(self.module, name)


@pytest.fixture
def engine(pillar_loaders, tmp_path):
    """engine(sources, secret=SECRET, **backup) -> the rolestack_backup module of minion backup with that pillar."""
    root = tmp_path / "backup"

    def make(listed, secret=SECRET, **backup):
        pillar = {
            "rolestack": {
                "platform": {"zone": "production.wpdn"},
                "host": {"name": "backup", "roles": ["backup"]},
                "backup": {
                    "host": {"name": "backup"},
                    "root": str(root),
                    "log_file": str(tmp_path / "log" / "backup.log"),
                    "timeout": 60,
                    "sources": [source.entry() for source in listed],
                    **backup,
                },
                "secrets": {"rsync_backup_secret": secret},
            }
        }
        return Engine(pillar_loaders("backup", pillar), root)

    return make


def _inode(path):
    return os.lstat(path).st_ino


def _du_kb(*paths):
    """``du -sk`` of each path in one call: a hard link already counted in an earlier path is not counted again."""
    out = subprocess.run(["du", "-sk", *map(str, paths)], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()]


def test_a_full_pull_takes_the_paths_only_with_a_manifest_status_and_log(sources, engine, tmp_path):
    app1 = sources("app1")
    module = engine([app1])
    records = module.run()
    record = records["app1"]
    assert record["result"] == "ok" and logic.NAME_RE.match(record["snapshot"]), record
    assert record["transferred"] >= 203 and record["files"] >= 203, record
    snap = module.root / "app1" / record["snapshot"]
    assert (snap / "etc/hostname").read_text() == "app1\n"
    assert (snap / "srv/www/index.html").read_text() == "<h1>hello</h1>\n"
    assert os.stat(snap / "etc/app/app.conf").st_mode & 0o777 == 0o640
    assert not (snap / "home").exists() and not (snap / "srv/other").exists(), "outside the host's paths"
    assert module.snapshots("app1") == {
        "host": "app1",
        "snapshots": [record["snapshot"]],
        "partial": [],
        "in_inventory": True,
    }
    verified = module.verify("app1")
    assert verified["ok"] and verified["checked"] == 203, verified
    status = module.status()["app1"]
    assert status["ok"] and status["last_snapshot"] == record["snapshot"] and status["last_error"] is None
    line = (tmp_path / "log/backup.log").read_text().strip()
    assert f"rolestack-backup host=app1 result=ok snapshot={record['snapshot']}" in line
    assert "\n" not in line


def test_an_unchanged_second_run_makes_hard_links_and_a_changed_file_is_copied(sources, engine):
    app1 = sources("app1")
    module = engine([app1])
    first = module.run()["app1"]["snapshot"]
    second_record = module.run(prune=False)["app1"]  # retention keeps one per day: the first would go
    second = second_record["snapshot"]
    assert second > first and second_record["transferred"] == 0, second_record
    one, two = module.root / "app1" / first, module.root / "app1" / second
    for relative, _info in logic.walk_files(two):
        assert _inode(one / relative) == _inode(two / relative), relative
        assert os.lstat(two / relative).st_nlink == 2
    first_kb, extra_kb = _du_kb(one, two)
    assert first_kb >= 4000 and extra_kb <= 0.02 * first_kb, (first_kb, extra_kb)

    (app1.tree / "srv/www/index.html").write_text("<h1>changed</h1>\n")
    third_record = module.run(prune=False)["app1"]
    three = module.root / "app1" / third_record["snapshot"]
    assert third_record["transferred"] == 1, third_record
    assert (three / "srv/www/index.html").read_text() == "<h1>changed</h1>\n"
    assert (two / "srv/www/index.html").read_text() == "<h1>hello</h1>\n", "the earlier snapshot is unchanged"
    assert _inode(three / "srv/www/index.html") != _inode(two / "srv/www/index.html")
    assert _inode(three / "etc/hostname") == _inode(two / "etc/hostname")
    assert module.verify("app1")["ok"] and module.verify("app1", first)["ok"]


def test_a_failed_pull_keeps_the_previous_snapshot_and_is_reported(sources, engine):
    app1 = sources("app1")
    module = engine([app1])
    good = module.run()["app1"]["snapshot"]
    before = module.status()["app1"]["last_success"]
    app1.daemon.stop()
    with pytest.raises(CommandExecutionError, match=r"1 host\(s\) failed: rolestack-backup host=app1 result=failed"):
        module.run()
    listed = module.snapshots("app1")
    assert listed["snapshots"] == [good] and len(listed["partial"]) == 1, listed
    assert module.verify("app1")["ok"]
    status = module.status()["app1"]
    assert status["last_result"] == "failed" and "rsync exit" in status["last_error"]
    assert status["last_success"] == before and status["last_snapshot"] == good and not status["ok"]
    with pytest.raises(CommandExecutionError, match=f"no snapshot '{listed['partial'][0]}'"):
        module.restore("app1", "/etc/hostname", snapshot=listed["partial"][0], target="/nonexistent-x")
    # the next good run takes the partial over: no partial left, a second good snapshot
    app1.daemon.start()
    assert module.run(prune=False)["app1"]["result"] == "ok"
    listed = module.snapshots("app1")
    assert len(listed["snapshots"]) == 2 and listed["partial"] == [] and listed["snapshots"][0] == good


def test_a_wrong_secret_is_refused_and_reported_without_the_secret(sources, engine):
    app1 = sources("app1")
    good = engine([app1]).run()["app1"]["snapshot"]
    module = engine([app1], secret=WRONG)
    with pytest.raises(CommandExecutionError, match="@ERROR: auth failed on module rolestack-backup") as caught:
        module.run()
    assert WRONG not in str(caught.value) and logic.host_secret(WRONG, "app1") not in str(caught.value)
    assert module.snapshots("app1")["snapshots"] == [good]
    assert module.status()["app1"]["last_result"] == "failed"


def test_one_failed_host_does_not_stop_the_others(sources, engine):
    app1, db2 = sources("app1"), sources("db2", paths=["/etc"])
    db2.daemon.stop()
    module = engine([app1, db2])
    with pytest.raises(CommandExecutionError, match="host=db2 result=failed"):
        module.run()
    assert len(module.snapshots("app1")["snapshots"]) == 1 and module.snapshots("db2")["snapshots"] == []
    status = module.status()
    assert status["app1"]["ok"] and not status["db2"]["ok"] and status["db2"]["last_success"] is None
    with pytest.raises(SaltInvocationError, match="'web9' is not a backup source"):
        module.run("web9")


def _backdate(module, host, names):
    """Snapshots of ``host`` named ``names``: hard-linked copies (cp -al) of its newest one, with its manifest."""
    host_dir = module.root / host
    newest = logic.good_snapshots(os.listdir(host_dir))[-1]
    for name in names:
        subprocess.run(["cp", "-al", str(host_dir / newest), str(host_dir / name)], check=True)
        shutil.copy(host_dir / (newest + logic.MANIFEST), host_dir / (name + logic.MANIFEST))


def test_retention_prunes_as_computed_also_for_a_host_gone_from_the_inventory(sources, engine):
    app1, gone = sources("app1"), sources("oldapp3")
    engine([app1, gone]).run()
    module = engine([app1], retention={"daily": 3, "weekly": 2, "monthly": 2})
    now = datetime.datetime.now(datetime.UTC)
    old = [
        logic.snapshot_name(now - datetime.timedelta(days=days, hours=hours))
        for days in range(1, 80, 3)
        for hours in (1, 2)
    ]
    _backdate(module, "app1", old)
    _backdate(module, "oldapp3", [logic.snapshot_name(now - datetime.timedelta(days=400))])
    (module.root / "app1" / (old[0] + logic.PARTIAL)).mkdir()  # a partial is never pruned nor counted
    expected = {
        host: logic.plan_retention(os.listdir(module.root / host), {"daily": 3, "weekly": 2, "monthly": 2}, now)
        for host in ("app1", "oldapp3")
    }
    assert expected["app1"]["delete"], "the test data must have something to prune"
    dry = module.prune(dry_run=True)
    assert dry["app1"]["deleted"] == expected["app1"]["delete"] and len(module.snapshots("app1")["snapshots"]) == 55
    pruned = module.prune()
    for host in ("app1", "oldapp3"):
        assert pruned[host]["keep"] == expected[host]["keep"]
        assert module.snapshots(host)["snapshots"] == expected[host]["keep"]
    assert module.snapshots("app1")["partial"] == [old[0] + logic.PARTIAL]
    # the gone host: its 400-day-old snapshot aged out, its newest is kept whatever its age
    assert len(module.snapshots("oldapp3")["snapshots"]) == 1 and not module.snapshots("oldapp3")["in_inventory"]
    assert all(os.path.exists(module.root / "app1" / (name + logic.MANIFEST)) for name in expected["app1"]["keep"])
    assert not any((module.root / "app1" / (name + logic.MANIFEST)).exists() for name in expected["app1"]["delete"])
    assert module.verify("app1")["ok"]
    with pytest.raises(CommandExecutionError, match="app1 is a backup source"):
        module.purge("app1", confirm=True)
    assert module.purge("oldapp3", confirm=True)["removed"] and not (module.root / "oldapp3").exists()


def test_a_deleted_file_is_restored_in_place_and_into_a_directory(sources, engine, tmp_path):
    app1 = sources("app1")
    module = engine([app1])
    module.run()
    (app1.tree / "etc/app/app.conf").unlink()
    shutil.rmtree(app1.tree / "srv/www/data")
    result = module.restore("app1", "/etc/app/app.conf")
    assert result["transferred"] == 1 and result["target"] == "app1:/etc/app/app.conf", result
    assert (app1.tree / "etc/app/app.conf").read_text() == "setting = 1\n"
    assert os.stat(app1.tree / "etc/app/app.conf").st_mode & 0o777 == 0o640
    module.restore("app1", "/srv/www/data")
    assert len(os.listdir(app1.tree / "srv/www/data")) == 200
    into = tmp_path / "restored"
    module.restore("app1", "/srv/www", target=str(into))
    assert (into / "srv/www/index.html").read_text() == "<h1>hello</h1>\n" and not (into / "etc").exists()
    with pytest.raises(CommandExecutionError, match="/etc/nothing is not in snapshot"):
        module.restore("app1", "/etc/nothing")
    with pytest.raises(SaltInvocationError, match="expected an absolute, normalized path"):
        module.restore("app1", "etc/../../x")


def test_the_restore_module_refuses_paths_outside_the_hosts_paths(sources, tmp_path):
    app1 = sources("app1")
    dropped = tmp_path / "drop" / "home" / "user"
    dropped.mkdir(parents=True)
    (dropped / "evil.txt").write_text("x\n")
    secret_file = tmp_path / "pw"
    secret_file.write_text(logic.host_secret(SECRET, "app1") + "\n")
    secret_file.chmod(0o600)
    url = logic.source_url(app1.entry(), logic.RESTORE_MODULE, logic.USER)
    argv = logic.restore_command(str(tmp_path / "drop"), "/home/user/evil.txt", url, password_file=str(secret_file))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert not (app1.tree / "home/user/evil.txt").exists(), done
    # and the pull module gives nothing outside the paths even when asked for it explicitly
    argv = ["rsync", "-a", f"--password-file={secret_file}", url.replace(logic.RESTORE_MODULE, logic.MODULE) + "home/"]
    listed = subprocess.run([*argv, str(tmp_path / "got") + "/"], capture_output=True, text=True, timeout=60)
    assert not (tmp_path / "got/user/private.txt").exists(), listed


def test_the_lock_refuses_a_concurrent_run_naming_the_holder(sources, engine):
    app1 = sources("app1")
    module = engine([app1])
    module.root.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                sys.path.insert(0, {str(REPO / "_utils")!r})
                import rolestack_backup
                with rolestack_backup.RunLock({str(module.root / logic.LOCK_FILE)!r}):
                    print("held", flush=True)
                    time.sleep(60)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CommandExecutionError, match=rf"another backup run holds the lock .* \(pid {holder.pid}\)"):
            module.run()
        with pytest.raises(CommandExecutionError, match=rf"\(pid {holder.pid}\)"):
            module.prune()
        assert not (module.root / "app1").exists(), "nothing was pulled"
    finally:
        holder.kill()
        holder.wait(10)
    assert module.run()["app1"]["result"] == "ok", "the lock is free once its holder is gone"


def test_a_run_in_progress_refuses_a_second_one(sources, engine):
    app1 = sources("app1", pull_delay=3)
    module = engine([app1])
    first = {}
    running = threading.Thread(target=lambda: first.update(module.run()))
    running.start()
    try:
        lock = module.root / logic.LOCK_FILE
        wait_for(lambda: lock.exists() and lock.read_text().strip(), 10, "the first run to take the lock")
        with pytest.raises(CommandExecutionError, match=rf"another backup run holds the lock .* \(pid {os.getpid()}\)"):
            module.run()
    finally:
        running.join(60)
    assert first["app1"]["result"] == "ok" and len(module.snapshots("app1")["snapshots"]) == 1
    assert module.root.joinpath(logic.LOCK_FILE).read_text() == "", "the lock names no holder once released"


def test_a_pull_from_a_host_outside_hosts_allow_is_refused(sources, engine):
    app1 = sources("app1", allow="10.10.10.4")
    module = engine([app1])
    # rsync 3.x answers a host outside hosts allow as if the module did not exist, and logs the denial
    with pytest.raises(CommandExecutionError, match=r"@ERROR: Unknown module 'rolestack-backup'.* \(the daemon also"):
        module.run()
    assert "rsync denied on module rolestack-backup from UNDETERMINED (127.0.0.1)" in app1.daemon.log.read_text()
    assert module.snapshots("app1")["snapshots"] == []


def test_verify_finds_a_changed_a_missing_and_an_added_file(sources, engine):
    app1 = sources("app1")
    module = engine([app1])
    snap = module.root / "app1" / module.run()["app1"]["snapshot"]
    (snap / "etc/hostname").write_text("tampered\n")
    (snap / "srv/www/index.html").unlink()
    (snap / "etc/added").write_text("x\n")
    verified = module.verify("app1")
    assert not verified["ok"]
    assert verified["changed"] == ["etc/hostname"] and verified["missing"] == ["srv/www/index.html"]
    assert verified["unlisted"] == ["etc/added"]


def test_a_broken_manifest_is_reported_by_verify_and_does_not_stop_the_next_run(sources, engine):
    app1 = sources("app1")
    module = engine([app1])
    first = module.run()["app1"]["snapshot"]
    (module.root / "app1" / (first + logic.MANIFEST)).write_text("not a manifest\n")
    with pytest.raises(CommandExecutionError, match=r"\.sha256: manifest line 1: expected '<sha256>  \./<path>'"):
        module.verify("app1")
    second = module.run(prune=False)["app1"]
    assert second["result"] == "ok" and module.verify("app1")["ok"] and module.verify("app1")["checked"] == 203
    (module.root / "app1" / (second["snapshot"] + logic.MANIFEST)).unlink()
    with pytest.raises(CommandExecutionError, match="no manifest"):
        module.verify("app1")
