"""
states/backup/source.sls rendered (state.show_sls) and dry-run (test=True) with the pillar the ext_pillar derives
from pillar.example: it writes the daemon's files and units, it never runs them here (the daemon binds to an
inventory address this machine does not have). The daemon itself, with the same configuration, is run for real by
tests/functional/test_backup_db_source.py and test_backup_engine.py.
"""

import pytest
import yaml

from tests.support.highdata import state_arg as _arg


def _dry_run(loaders):
    ret = loaders.modules.state.sls("backup.source", test=True)
    assert not ret.failed, ret.raw
    assert all(state.result is not False for state in ret), ret.raw
    return ret


@pytest.mark.parametrize("minion", ["app1", "salt"])
def test_a_source_gets_its_daemon_from_the_pillar(make_loaders, minion):
    loaders = make_loaders(minion)
    source = loaders.modules.pillar.get("rolestack:backup:source", unmask=True)
    secret = loaders.modules.pillar.get("rolestack:secrets:rsync_backup_source", unmask=True)
    high = loaders.modules.state.show_sls("backup.source")
    assert isinstance(high, dict), high
    assert _arg(high, "backup-source-config", "name") == "/etc/rsyncd-backup.conf"
    assert _arg(high, "backup-source-config", "contents") == source["config"]
    assert _arg(high, "backup-source-config", "mode") == "0644"
    assert _arg(high, "backup-source-secrets", "name") == "/etc/rsyncd-backup.secrets"
    assert _arg(high, "backup-source-secrets", "contents") == secret and secret.startswith("backup:")
    assert _arg(high, "backup-source-secrets", "mode") == "0600"
    assert _arg(high, "backup-source-rsync", "name") == "rsync"
    unit = _arg(high, "backup-source-unit", "contents")
    assert _arg(high, "backup-source-unit", "name") == "/etc/systemd/system/rolestack-backup-source.service"
    address = loaders.modules.pillar.get("rolestack:host:address", unmask=True)
    assert (
        "ExecStart=/usr/bin/rsync --daemon --no-detach --config=/etc/rsyncd-backup.conf --port=8873 "
        f"--address={address}\n" in unit
    )
    assert _arg(high, "backup-source-daemon", "name") == "rolestack-backup-source.service"
    assert _arg(high, "backup-source-daemon", "watch") == [{"file": "backup-source-unit"}]
    assert "rolestack_service" in high["backup-source-daemon"]
    assert not [state_id for state_id in high if "db-backup" in state_id]  # no database here
    _dry_run(loaders)


def test_a_db_source_gets_the_pre_transfer_database_backup(make_loaders):
    loaders = make_loaders("db2")
    high = loaders.modules.state.show_sls("backup.source")
    assert isinstance(high, dict), high
    assert "pre-xfer exec = /bin/systemctl start rolestack-db-backup.service" in _arg(
        high, "backup-source-config", "contents"
    )
    assert _arg(high, "backup-source-db-backup-unit", "name") == "/etc/systemd/system/rolestack-db-backup.service"
    assert "rolestack_db_backup.dump" in _arg(high, "backup-source-db-backup-unit", "contents")
    assert _arg(high, "backup-source-db-backup-dir", "name") == "/var/backups/rolestack/db"
    assert _arg(high, "backup-source-db-backup-dir", "mode") == "0700"
    _dry_run(loaders)


@pytest.mark.parametrize("minion", ["backup", "frontend1"])  # the backup host; a host whose address is pending
def test_a_host_that_is_no_source_gets_a_notification(make_loaders, minion):
    ret = _dry_run(make_loaders(minion))
    assert [state.id for state in ret] == ["backup-source-pending"]


def test_without_a_backup_host_no_host_is_a_source(make_loaders, pillar_tree):
    inventory = pillar_tree / "inventory.yaml"
    data = yaml.safe_load(inventory.read_text())
    del data["hosts"]["backup"], data["secrets"]["rsync_backup_secret"]
    inventory.write_text(yaml.safe_dump(data))
    ret = _dry_run(make_loaders("app1"))
    assert [state.id for state in ret] == ["backup-source-pending"]
    assert "no backup daemon on app1" in next(iter(ret)).comment
