"""The backup host's SLS (states/backup/init.sls): rendered and dry-run with the derived pillar (it writes systemd
units and starts a timer: run for real in the lab, tests/e2e/test_8_backup.py)."""

import rolestack_backup as engine

from tests.support.highdata import state_arg as _arg


def test_the_backup_sls_writes_the_derived_units_and_runs_the_timer(make_loaders):
    loaders = make_loaders("backup")
    backup = loaders.modules.pillar.get("rolestack:backup", unmask=True)
    high = loaders.modules.state.show_sls("backup")
    assert isinstance(high, dict), high
    assert _arg(high, "backup-timer-unit", "name") == "/etc/systemd/system/rolestack-backup.timer"
    assert _arg(high, "backup-timer-unit", "contents") == backup["timer"]
    assert "OnCalendar=*-*-* 01:30:00 UTC" in backup["timer"]
    assert _arg(high, "backup-service-unit", "contents") == backup["service"]
    assert "rolestack_backup.run" in backup["service"] and "Type=oneshot" in backup["service"]
    assert _arg(high, "backup-root", "name") == engine.ROOT and _arg(high, "backup-root", "mode") == "0700"
    assert _arg(high, "backup-log-dir", "name") == "/var/log/rolestack"
    assert _arg(high, "backup-timer", "name") == "rolestack-backup.timer"
    assert "rolestack_service" in high["backup-timer"]
    assert "backup-nfs-config" in high  # the NFS share comes with the role
    ret = loaders.modules.state.sls("backup", test=True)
    assert not ret.failed, ret.raw
    assert all(state.result is not False for state in ret), ret.raw


def test_the_backup_sls_refuses_another_host(make_loaders):
    ret = make_loaders("app1").modules.state.sls("backup", test=True)
    assert ret.failed and "the backup role applies only to the host with role backup" in str(ret.raw)
