"""A master with two minions: sync from the repo, the derived pillar per minion, every SLS renders."""

import os
import time

import pytest
import rolestack_highstate
import yaml

from tests.support.paths import STATES


def all_sls():
    names = ["base"]
    for path in sorted((STATES / "roles").glob("*.sls")) if (STATES / "roles").exists() else []:
        names.append(f"roles.{path.stem}")
    return names


def test_sync_all_brings_our_modules(minions):
    for minion in minions.values():
        ret = minion.salt_call_cli().run("inventory.roles_from_name", "memcache-alpha1")
        assert ret.returncode == 0, ret
        assert ret.data == {"roles": ["memcache"], "cluster": "alpha"}


def test_each_minion_gets_its_derived_pillar(minions):
    app1 = minions["app1"].salt_call_cli().run("pillar.get", "rolestack", unmask=True)
    db2 = minions["db2"].salt_call_cli().run("pillar.get", "rolestack", unmask=True)
    assert app1.data["host"]["roles"] == ["app"]
    assert db2.data["host"]["roles"] == ["db"]
    assert db2.data["db"]["masterdb"]["fqdn"] == "db1-masterdb.production.wpdn"
    assert "replication_password" in db2.data["secrets"]
    assert "replication_password" not in app1.data["secrets"]
    assert "db" not in app1.data and "proxy" not in db2.data


def test_top_maps_roles_by_pillar(minions):
    ret = minions["db2"].salt_call_cli().run("state.show_top")
    assert ret.returncode == 0, ret
    assert "base" in ret.data["base"]


@pytest.mark.parametrize("sls", all_sls())
def test_every_sls_renders_and_dry_runs(minions, sls):
    for minion in minions.values():
        cli = minion.salt_call_cli()
        shown = cli.run("state.show_sls", sls)
        assert shown.returncode == 0, shown
        assert isinstance(shown.data, dict) and shown.data, shown
        dry = cli.run("state.apply", sls, test=True)
        assert dry.returncode == 0, dry
        assert not rolestack_highstate.summarize(dry.data, test=True)["failed"], dry.data


def test_highstate_dry_run(minions):
    ret = minions["app1"].salt_call_cli().run("state.highstate", test=True)
    assert ret.returncode == 0, ret
    assert not rolestack_highstate.summarize(ret.data, test=True)["failed"], ret.data
    # a db host needs the CA certificate the salt host publishes (no salt host runs here): refused, saying why
    ret = minions["db2"].salt_call_cli().run("state.highstate", test=True)
    assert ret.returncode != 0
    text = ret.stdout + ret.stderr
    assert "the CA certificate is not in the salt mine" in text
    assert "state.apply salt" in text  # (salt adds the template lines around a render error)


def test_invalid_inventory_is_refused_with_the_error_visible(minions, pillar_tree):
    inventory = pillar_tree / "inventory.yaml"
    good = inventory.read_text()
    data = yaml.safe_load(good)
    data["hosts"]["db2"]["address"] = "10.10.10.11"
    data["hosts"]["app1"]["roles"] = ["app", "warehouse"]
    inventory.write_text(yaml.safe_dump(data))
    stamp = time.time() + 2
    os.utime(inventory, (stamp, stamp))
    try:
        cli = minions["app1"].salt_call_cli()
        ret = cli.run("state.highstate", test=True)
        assert ret.returncode != 0
        text = ret.stdout + ret.stderr
        assert "hosts.db2.address: 10.10.10.11 is already the address of db1-masterdb" in text, text
        assert "hosts.app1.roles[1]: unknown role 'warehouse'" in text
        assert "Traceback" not in text
        pillar = cli.run("pillar.items", unmask=True)
        assert "_errors" in pillar.data
    finally:
        inventory.write_text(good)
        os.utime(inventory, (stamp + 2, stamp + 2))
    ret = minions["app1"].salt_call_cli().run("state.highstate", test=True)
    assert ret.returncode == 0, ret
