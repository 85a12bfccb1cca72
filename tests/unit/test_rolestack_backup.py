"""
The backup engine's pure logic (_utils/rolestack_backup.py): what each host backs up, the ``backup`` key's
validation, snapshot names, retention (property-style, over seeded random histories), the rsync argv, the source's
daemon configuration, records, status, the lock and the manifest.
"""

import copy
import datetime
import json
import os
import random

import pytest
import rolestack_backup as logic
import rolestack_inventory as inv
import yaml

from tests.support.paths import PILLAR_EXAMPLE

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 2, 1, 30, tzinfo=UTC)


@pytest.fixture
def example():
    return yaml.safe_load((PILLAR_EXAMPLE / "inventory.yaml").read_text())


def _with(example, backup):
    data = copy.deepcopy(example)
    data["backup"] = backup
    return data


# --- what is backed up, validation, derivation -------------------------------------------------------------------


def test_role_defaults_and_additions():
    assert logic.host_paths(["app"]) == ["/etc"]
    assert logic.host_paths(["db", "masterdb"]) == ["/etc", logic.DB_DUMP_DIR]
    assert logic.host_paths(["mail"]) == ["/etc"]  # the DKIM keys are under /etc: not listed twice
    assert logic.host_paths(["salt"]) == ["/etc", "/srv"]
    assert logic.host_paths(["app"], {"app": ["/var/www/uploads", "/etc/nginx"], "db": ["/x"]}) == [
        "/etc",
        "/var/www/uploads",
    ]
    assert logic.minimal_paths(["/srv/a", "/srv", "/srvx", "/srv/a/b"]) == ["/srv", "/srvx"]


def test_the_ca_dir_is_the_inventorys():
    assert logic.CA_DIR == inv.CA_DIR
    assert logic.CA_DIR in logic.ROLE_PATHS["salt"] and logic.DKIM_DIR in logic.ROLE_PATHS["mail"]


def test_the_backup_key_is_optional_and_derived_for_the_backup_host_only(example):
    assert inv.validate(example) == []
    hosts = inv.derive(example)["hosts"]
    backup = hosts["backup"]["backup"]
    assert backup["retention"] == logic.RETENTION_DEFAULTS and backup["schedule"] == ["*-*-* 01:30:00 UTC"]
    assert backup["root"] == logic.ROOT and backup["module"] == logic.MODULE
    sources = {source["name"]: source for source in backup["sources"]}
    assert "backup" not in sources and "frontend1" not in sources  # itself; a pending host (no address)
    assert sources["db1-masterdb"]["paths"] == ["/etc", logic.DB_DUMP_DIR]
    assert sources["salt"] == {
        "name": "salt",
        "fqdn": "salt.production.wpdn",
        "address": "10.10.10.2",
        "port": logic.PORT,
        "paths": ["/etc", "/srv"],
        "database": False,
        "io_timeout": logic.IO_TIMEOUT_S,
    }
    # a db source's daemon backs the database up before it sends anything: a longer rsync --timeout
    assert sources["db1-masterdb"]["database"] and sources["db1-masterdb"]["io_timeout"] == logic.DB_IO_TIMEOUT_S
    assert logic.DB_IO_TIMEOUT_S > logic.IO_TIMEOUT_S
    assert backup["nfs_clients"] and backup["host"]["name"] == "backup"  # the inventory's own keys stay
    assert "sources" not in hosts["app1"]["backup"]


def test_the_backup_key_is_derived(example):
    data = _with(
        example,
        {
            "paths": {"app": ["/var/www/uploads"]},
            "retention": {"daily": 2, "monthly": 0},
            "schedule": ["01:00", "13:00"],
        },
    )
    assert inv.validate(data) == []
    backup = inv.derive(data)["hosts"]["backup"]["backup"]
    assert backup["retention"] == {"daily": 2, "weekly": 4, "monthly": 0}
    assert backup["schedule"] == ["*-*-* 01:00:00 UTC", "*-*-* 13:00:00 UTC"]
    assert {s["name"]: s["paths"] for s in backup["sources"]}["app1"] == ["/etc", "/var/www/uploads"]


REFUSALS = [
    (["x"], "backup: got a list, expected a mapping with keys paths, retention, schedule"),
    ({"keep": 1}, "backup.keep: unknown key (value: an int), expected one of paths, retention, schedule"),
    ({"paths": ["/x"]}, "backup.paths: got a list, expected a mapping of role name to a list of paths"),
    ({"paths": {"web": ["/x"]}}, "backup.paths.web: unknown role 'web', expected one of app, backup"),
    ({"paths": {"app": "/x"}}, "backup.paths.app: got a str of length 2, expected a non-empty list of absolute"),
    ({"paths": {"app": []}}, "backup.paths.app: got a list, expected a non-empty list"),
    ({"paths": {"app": ["var/www"]}}, "backup.paths.app[0]: got 'var/www' (a str of length 7), expected an absolute"),
    ({"paths": {"app": ["/var/../etc"]}}, "backup.paths.app[0]: got '/var/../etc' (a str of length 11), expected"),
    ({"paths": {"app": [7]}}, "backup.paths.app[0]: got 7 (an int), expected an absolute"),
    ({"paths": {"app": ["/proc/x"]}}, "backup.paths.app[0]: got '/proc/x', expected a path outside /dev, /proc"),
    ({"paths": {"app": ["/srv"]}}, "backup.paths.app[0]: got '/srv', expected a path outside"),  # holds the root
    # the elastic hosts' NFS mount of the backup host's own share (rolestack_elastic.MOUNT_PATH)
    (
        {"paths": {"elastic": ["/mnt/elastic-snapshots/main"]}},
        "backup.paths.elastic[0]: got '/mnt/elastic-snapshots/main', expected a path outside",
    ),
    ({"paths": {"app": ["/a", "/a"]}}, "backup.paths.app[1]: '/a' listed twice, expected each path once"),
    ({"retention": 7}, "backup.retention: got an int, expected a mapping with keys daily, weekly, monthly"),
    ({"retention": {"daily": -1}}, "backup.retention.daily: got -1 (an int), expected an integer from 0 to 3660"),
    ({"retention": {"weekly": "4"}}, "backup.retention.weekly: got '4' (a str of length 1), expected an integer"),
    ({"retention": {"monthly": True}}, "backup.retention.monthly: got True (a bool), expected an integer"),
    ({"retention": {"yearly": 1}}, "backup.retention.yearly: unknown key (value: an int), expected one of daily"),
    ({"schedule": "1:30"}, "backup.schedule: got '1:30' (a str of length 4), expected a time of day 'HH:MM' (UTC)"),
    ({"schedule": 130}, "backup.schedule: got 130 (an int), expected a time of day"),
    ({"schedule": []}, "backup.schedule: got [] (a list), expected a time of day"),
    ({"schedule": ["01:30", "01:30"]}, "backup.schedule: got ['01:30', '01:30'], expected each time once"),
]


@pytest.mark.parametrize(("backup", "expected"), REFUSALS)
def test_every_refusal_names_the_key_path_the_type_and_what_was_expected(example, backup, expected):
    errors = inv.validate(_with(example, backup))
    assert any(expected in error for error in errors), errors


def test_valid_backup_keys_pass(example):
    for backup in (None, {}, {"retention": {"daily": 0, "weekly": 0, "monthly": 0}}, {"schedule": "23:59"}):
        assert inv.validate(_with(example, backup)) == [], backup


def test_settings_fill_in_the_defaults():
    config = logic.settings({"sources": [{"name": "app1", "fqdn": "f", "address": "a", "paths": ["/etc"]}]})
    assert config["root"] == logic.ROOT and config["retention"] == logic.RETENTION_DEFAULTS
    assert config["sources"]["app1"]["port"] == logic.PORT
    assert config["sources"]["app1"]["io_timeout"] == logic.IO_TIMEOUT_S
    assert logic.settings(None)["sources"] == {}


def test_host_secrets_are_per_host_and_stable():
    one, two = logic.host_secret("s" * 20, "app1"), logic.host_secret("s" * 20, "app2")
    assert one != two and len(one) == 64 and one == logic.host_secret("s" * 20, "app1")
    assert "s" * 20 not in one and one != logic.host_secret("t" * 20, "app1")


# --- names -------------------------------------------------------------------------------------------------------


def test_snapshot_names_are_utc_sortable_and_parsed_back():
    local = datetime.datetime(2026, 12, 2, 2, 30, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert logic.snapshot_name(local) == "2026-12-02T013000Z"
    assert logic.snapshot_name(local.timestamp()) == "2026-12-02T013000Z"
    assert logic.parse_name("2026-12-02T013000Z") == datetime.datetime(2026, 12, 2, 1, 30, tzinfo=UTC)
    for other in ("2026-12-02T013000Z.partial", "2026-13-02T013000Z", "2026-12-02T013000Z.sha256", "latest", None):
        assert logic.parse_name(other) is None, other
    with pytest.raises(ValueError, match="aware"):
        logic.snapshot_name(datetime.datetime(2026, 1, 1))
    moments = [NOW + datetime.timedelta(seconds=random.Random(n).randint(0, 10**8)) for n in range(200)]
    assert sorted(moments) == [logic.parse_name(name) for name in sorted(map(logic.snapshot_name, moments))]


def test_next_name_is_never_taken():
    taken = ["2026-12-02T013000Z", "2026-12-02T013001Z.partial", "2026-12-02T013002Z.sha256"]
    assert logic.next_name(NOW, taken) == "2026-12-02T013003Z"
    assert logic.next_name(NOW, []) == "2026-12-02T013000Z"
    names = []
    for _ in range(5):
        names.append(logic.next_name(NOW, names))
    assert len(set(names)) == 5 and names == sorted(names)


def test_good_snapshots_leave_partials_and_others_out():
    entries = ["2026-12-02T013000Z.partial", "2026-12-01T013000Z", "x", "2026-11-30T013000Z", ".status.json"]
    assert logic.good_snapshots(entries) == ["2026-11-30T013000Z", "2026-12-01T013000Z"]


# --- retention ---------------------------------------------------------------------------------------------------


def _names(*moments):
    return [logic.snapshot_name(moment) for moment in moments]


def test_retention_worked_example():
    day = datetime.timedelta(days=1)
    names = _names(
        NOW,  # today, newest
        NOW - datetime.timedelta(hours=1),  # today, older: not kept (one per day)
        NOW - day,
        NOW - 2 * day,
        NOW - 3 * day,  # beyond daily=3: kept as the newest of its ISO week (2026-W48, Sunday 29 Nov)
        NOW - 4 * day,  # same week, older
        NOW - 40 * day,  # October: newest of its month
        NOW - 41 * day,
        NOW - 400 * day,  # out of every window
    )
    plan = logic.plan_retention([*names, names[0] + ".partial"], {"daily": 3, "weekly": 2, "monthly": 3}, NOW)
    assert plan["keep"] == sorted([names[0], names[2], names[3], names[4], names[6]])
    assert plan["delete"] == sorted([names[1], names[5], names[7], names[8]])
    assert plan["reasons"][names[0]] == ["newest", "daily 2026-12-02", "weekly 2026-W49", "monthly 2026-12"]
    assert plan["reasons"][names[4]] == ["weekly 2026-W48"]
    assert plan["reasons"][names[3]] == ["daily 2026-11-30", "monthly 2026-11"]
    assert plan["reasons"][names[6]] == ["monthly 2026-10"]


def test_the_newest_is_kept_whatever_its_age_and_zero_keeps_only_it():
    names = _names(NOW - datetime.timedelta(days=900), NOW - datetime.timedelta(days=901))
    plan = logic.plan_retention(names, {"daily": 7, "weekly": 4, "monthly": 6}, NOW)
    assert plan["keep"] == [names[0]] and plan["reasons"] == {names[0]: ["newest"]}
    plan = logic.plan_retention(
        _names(NOW, NOW - datetime.timedelta(days=1)), dict.fromkeys(("daily", "weekly", "monthly"), 0), NOW
    )
    assert plan["keep"] == [logic.snapshot_name(NOW)]
    assert logic.plan_retention(["x.partial"], {}, NOW) == {"keep": [], "delete": [], "reasons": {}}


def _history(rng):
    """A random history: up to 300 snapshots over ~2 years before NOW, some days with several, some none."""
    count = rng.randint(0, 300)
    return sorted(
        {logic.snapshot_name(NOW - datetime.timedelta(seconds=rng.randint(0, 730 * 86400))) for _ in range(count)}
    )


@pytest.mark.parametrize("seed", range(60))
def test_retention_properties(seed):
    rng = random.Random(seed)
    names = _history(rng)
    retention = {"daily": rng.randint(0, 20), "weekly": rng.randint(0, 10), "monthly": rng.randint(0, 15)}
    partials = [name + ".partial" for name in rng.sample(names, min(3, len(names)))]
    plan = logic.plan_retention(names + partials + ["junk"], retention, NOW)
    keep, delete = set(plan["keep"]), set(plan["delete"])
    # a partition of the good snapshots; partials and other entries in neither
    assert keep | delete == set(names) and not keep & delete
    if names:
        assert max(names) in keep  # the newest, always
    # at most one per bucket, plus the newest
    assert len(keep) <= retention["daily"] + retention["weekly"] + retention["monthly"] + 1
    # any day: at most its newest is kept (every bucket's newest is its last day's newest); in the daily window,
    # a day with snapshots keeps its newest
    days = {}
    for name in names:
        days.setdefault(logic.parse_name(name).date(), []).append(name)
    window = {NOW.date() - datetime.timedelta(days=back) for back in range(retention["daily"])}
    for day, listed in days.items():
        assert set(listed) & keep <= {max(listed)}
        if day in window:
            assert max(listed) in keep
    # every month in the window with snapshots keeps its newest; a kept snapshot has a reason
    for name in keep:
        assert plan["reasons"][name]
    months = {(logic.parse_name(n).year, logic.parse_name(n).month) for n in names}
    for year, month in logic._months_back(NOW.date(), retention["monthly"]):
        if (year, month) in months:
            newest = max(n for n in names if (logic.parse_name(n).year, logic.parse_name(n).month) == (year, month))
            assert f"monthly {year}-{month:02d}" in plan["reasons"][newest]
    # stable: pruning what it says and planning again deletes nothing more
    assert logic.plan_retention(plan["keep"], retention, NOW)["keep"] == plan["keep"]
    # monotonic: a longer retention keeps a superset
    longer = {key: value + rng.randint(0, 5) for key, value in retention.items()}
    assert keep <= set(logic.plan_retention(names, longer, NOW)["keep"])


# --- rsync commands ----------------------------------------------------------------------------------------------

SOURCE = {"name": "app1", "fqdn": "app1.production.wpdn", "address": "10.10.10.51", "port": 8873, "paths": ["/etc"]}


def test_filter_rules_select_the_paths_and_their_parents_only():
    assert logic.filter_rules(["/etc", "/var/backups/rolestack/db", "/etc/pki/rolestack"]) == [
        "+ /etc/***",
        "+ /var/",
        "+ /var/backups/",
        "+ /var/backups/rolestack/",
        "+ /var/backups/rolestack/db/***",
        "- *",
    ]


def test_pull_command():
    config = logic.settings({"sources": [SOURCE]})
    argv = logic.pull_command(SOURCE, config, "/srv/backup/app1/N.partial", "/srv/backup/app1/P", "/run/pw", "rsync")
    assert argv[:4] == ["rsync", "-a", "--delete", "--numeric-ids"]
    assert "--link-dest=/srv/backup/app1/P" in argv and "--password-file=/run/pw" in argv
    assert argv[-2:] == ["rsync://backup@10.10.10.51:8873/rolestack-backup/", "/srv/backup/app1/N.partial/"]
    assert argv[-4:-2] == ["--filter=+ /etc/***", "--filter=- *"]
    first = logic.pull_command(dict(SOURCE, port=873, address=None), config, "/d.partial", None, "/pw")
    assert not [arg for arg in first if arg.startswith("--link-dest")]
    assert first[-2] == "rsync://backup@app1.production.wpdn/rolestack-backup/"  # rsync's own port: not named
    assert f"--timeout={logic.IO_TIMEOUT_S}" in argv


def test_a_db_source_gets_a_longer_io_timeout(example):
    derived = logic.derive(example, _entries(example))
    config = logic.settings(derived)
    db2 = config["sources"]["db2"]
    argv = logic.pull_command(db2, config, "/p.partial", None, "/pw")
    assert f"--timeout={logic.DB_IO_TIMEOUT_S}" in argv and f"--timeout={logic.IO_TIMEOUT_S}" not in argv
    app1 = logic.pull_command(config["sources"]["app1"], config, "/p.partial", None, "/pw")
    assert f"--timeout={logic.IO_TIMEOUT_S}" in app1
    # the db backup's oneshot gives up before the pull would
    unit = logic.render_db_backup_unit()
    assert "Type=oneshot" in unit and "rolestack_db_backup.dump" in unit
    assert int(unit.split("TimeoutStartSec=")[1].split()[0]) < logic.DB_IO_TIMEOUT_S


def test_restore_command():
    argv = logic.restore_command("/srv/backup/app1/S", "/etc/hosts", "/tmp/into")
    assert argv[-2:] == ["/srv/backup/app1/S/./etc/hosts", "/tmp/into/"] and "--relative" in argv
    argv = logic.restore_command("/s", "/", "rsync://backup@h/rolestack-restore/", delete=True, password_file="/pw")
    assert argv[-2:] == ["/s/./", "rsync://backup@h/rolestack-restore/"] and "--delete" in argv
    for bad in ("etc/hosts", "/etc/../root", "/etc/", None):
        with pytest.raises(logic.BackupError, match="expected an absolute, normalized path"):
            logic.check_restore_path(bad)


def test_source_config_allows_the_backup_host_only_and_filters_both_modules():
    spec = {"module": "rolestack-backup", "restore_module": "rolestack-restore", "user": "backup", "paths": ["/etc"]}
    text = logic.render_source_config(spec, "10.10.10.4", "/etc/rsyncd.backup.secrets")
    for module, mode in (("rolestack-backup", "read only = yes"), ("rolestack-restore", "write only = yes")):
        section = text.split(f"[{module}]")[1].split("\n\n")[0]
        assert "hosts allow = 10.10.10.4" in section and "hosts deny = *" in section and mode in section
        assert "filter = + /etc/*** - *" in section and "auth users = backup" in section
    assert "list = no" in text
    assert "rolestack-restore" not in logic.render_source_config(spec, "10.10.10.4", "/s", restore=False)
    assert "pre-xfer" not in text
    hooked = logic.render_source_config(spec, "10.10.10.4", "/s", pre_xfer="/bin/systemctl start x.service")
    backup_section = hooked.split("[rolestack-backup]")[1].split("[rolestack-restore]")[0]
    assert "    pre-xfer exec = /bin/systemctl start x.service\n" in backup_section
    assert "pre-xfer" not in hooked.split("[rolestack-restore]")[1]  # never on the write-only module


def test_source_pillar_gives_a_source_its_config_and_own_secret_only(example):
    derived = logic.derive(example, _entries(example))
    assert derived["sources"] == inv.derive(example)["hosts"]["backup"]["backup"]["sources"]
    secret = example["secrets"]["rsync_backup_secret"]
    app1 = logic.source_pillar(derived, "app1", "10.10.10.4", secret)
    assert app1["secrets"] == f"backup:{logic.host_secret(secret, 'app1')}\n" and secret not in app1["secrets"]
    assert app1["port"] == logic.PORT and app1["config_file"] != "/etc/rsyncd.conf"  # the salt role's
    assert "hosts allow = 10.10.10.4" in app1["config"] and "filter = + /etc/*** - *" in app1["config"]
    db2 = logic.source_pillar(derived, "db2", "10.10.10.4", secret, restore=False)
    assert "+ /var/backups/rolestack/db/***" in db2["config"] and "rolestack-restore" not in db2["config"]
    assert logic.source_pillar(derived, "backup", "10.10.10.4", secret) is None
    # the daemon's unit: on the host's own address, the daemon's port, the source config
    assert app1["address"] == "10.10.10.51" and app1["unit_file"] == "/etc/systemd/system/" + app1["service"]
    exec_start = [line for line in app1["unit"].splitlines() if line.startswith("ExecStart=")]
    assert exec_start == [
        "ExecStart=/usr/bin/rsync --daemon --no-detach --config=/etc/rsyncd-backup.conf --port=8873 "
        "--address=10.10.10.51"
    ]
    # a db host's read-only module takes the database backup first; no other host's does
    assert app1["db_backup"] is None and "pre-xfer" not in app1["config"]
    assert db2["db_backup"]["dir"] == logic.DB_DUMP_DIR and db2["db_backup"]["service"] == "rolestack-db-backup.service"
    assert f"pre-xfer exec = {logic.DB_PRE_XFER}" in db2["config"]


def _entries(example):
    """The derivation's host entries (name, fqdn, address, roles) of the example, as the inventory util builds them."""
    hosts = inv.derive(example)["hosts"]
    return [dict(pillar["host"]) for pillar in hosts.values()]


def test_stats_and_errors():
    stats = "Number of files: 1,234 (reg: 1,000, dir: 234)\nNumber of regular files transferred: 5\n"
    stats += "Total file size: 12,345,678 bytes\nTotal transferred file size: 9 bytes\n"
    assert logic.parse_stats(stats) == {"files": 1234, "transferred": 5, "size": 12345678, "transferred_bytes": 9}
    assert logic.parse_stats("")["files"] is None
    assert logic.rsync_error(5, "@ERROR: auth failed on module m\nrsync error: x", "s3cr3t") == (
        "rsync exit 5: @ERROR: auth failed on module m"
    )
    assert "s3cr3t" not in logic.rsync_error(10, "failed with s3cr3t\n  here", "s3cr3t")


# --- records, status, lock ---------------------------------------------------------------------------------------


def test_result_line_is_one_line():
    record = {"host": "app1", "result": "ok", "snapshot": "2026-12-02T013000Z", "files": 3, "seconds": 1.5}
    assert logic.result_line(record) == (
        "rolestack-backup host=app1 result=ok snapshot=2026-12-02T013000Z files=3 seconds=1.5"
    )
    line = logic.result_line({"host": "db2", "result": "failed", "error": 'rsync exit 10: "no"\nconnection refused'})
    assert "\n" not in line and line.endswith('error="rsync exit 10: \\"no\\"\\nconnection refused"')


def test_status_keeps_the_last_success_through_failures(tmp_path):
    ok = {"host": "app1", "result": "ok", "snapshot": "S1", "finished": "2026-12-01T01:30:10Z"}
    failed = {"host": "app1", "result": "failed", "error": "rsync exit 10", "finished": "2026-12-02T01:30:10Z"}
    status = logic.update_status(logic.update_status({}, ok), failed)
    assert status["hosts"]["app1"] == {
        "last_attempt": "2026-12-02T01:30:10Z",
        "last_result": "failed",
        "last_error": "rsync exit 10",
        "last_success": "2026-12-01T01:30:10Z",
        "last_snapshot": "S1",
    }
    path = tmp_path / "status.json"
    assert logic.read_status(path) == {"version": 1, "hosts": {}}
    logic.write_status(path, status)
    assert logic.read_status(path) == status and json.loads(path.read_text())["version"] == 1
    path.write_text("[1]")
    with pytest.raises(logic.BackupError, match="expected a JSON object"):
        logic.read_status(path)
    health = logic.health(status, {"app1": {}, "db2": {}}, NOW, 26)
    assert health["app1"]["age_seconds"] == 86390 and not health["app1"]["ok"]  # the last attempt failed
    assert health["db2"] == {
        "last_success": None,
        "last_result": None,
        "age_seconds": None,
        "in_inventory": True,
        "ok": False,
    }
    fresh = logic.health(logic.update_status({}, ok), {}, NOW, 26)["app1"]
    assert fresh["ok"] and not fresh["in_inventory"]
    assert not logic.health(logic.update_status({}, ok), {}, NOW + datetime.timedelta(hours=3), 26)["app1"]["ok"]


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path):
    path = str(tmp_path / ".lock")
    with logic.RunLock(path):
        with open(path) as handle:
            assert handle.read().strip() == str(os.getpid())
        refused = rf"another backup run holds the lock .* \(pid {os.getpid()}\)"
        with pytest.raises(logic.BackupError, match=refused), logic.RunLock(path):
            pass
    with logic.RunLock(path):  # free again
        pass


# --- manifest ----------------------------------------------------------------------------------------------------


def test_manifest_round_trip_with_odd_names_and_reuse_of_linked_files(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for top in (one, two):
        (top / "d").mkdir(parents=True)
    (one / "d" / "same").write_text("same\n")
    (one / "odd\nname\\x").write_text("odd\n")
    os.link(one / "d" / "same", two / "d" / "same")
    (two / "new").write_text("new\n")
    os.symlink("new", two / "link")
    first = logic.build_manifest(str(one))
    assert set(first) == {"d/same", "odd\nname\\x"}
    text = logic.format_manifest(first)
    assert "\\" + first["odd\nname\\x"] + "  ./odd\\nname\\\\x" in text.splitlines()
    assert logic.parse_manifest(text) == first
    planted = dict(first, **{"d/same": "0" * 64})  # a linked file's digest comes from the previous manifest
    second = logic.build_manifest(str(two), str(one), planted)
    assert second == {"d/same": "0" * 64, "new": logic._sha256(two / "new")}
    assert logic.verify_manifest(str(two), logic.build_manifest(str(two)))["ok"]
    with pytest.raises(logic.BackupError, match="manifest line 1"):
        logic.parse_manifest("nonsense\n")


def test_the_timer_runs_the_engine_at_each_scheduled_time():
    units = logic.scheduled_units(logic.on_calendar(["01:30", "13:05"]))
    assert units["timer_unit"] == "rolestack-backup.timer" and units["service_unit"] == "rolestack-backup.service"
    assert "OnCalendar=*-*-* 01:30:00 UTC\nOnCalendar=*-*-* 13:05:00 UTC\n" in units["timer"]
    assert "Persistent=true" in units["timer"] and "WantedBy=timers.target" in units["timer"]
    assert "Type=oneshot" in units["service"]
    assert "ExecStart=/usr/bin/salt-call --retcode-passthrough" in units["service"]
    assert units["service"].rstrip().endswith("rolestack_backup.run")
