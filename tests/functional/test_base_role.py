"""
The base role through the state compiler, with the pillar the ext_pillar derives. Host-level files
(resolv.conf, /etc/hosts, sshd) are never changed on the machine running the tests: test=True only here;
the e2e tier applies the role for real inside lab hosts.
"""

import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.paths import STATES


@pytest.mark.parametrize("minion_id", ["app1", "db1-masterdb", "salt", "stranger"])
def test_base_role_dry_run(make_loaders, minion_id):
    loaders = make_loaders(minion_id)
    ret = loaders.modules.state.sls("base", test=True)
    assert not ret.failed, ret.raw
    by_id = {r.id: r for r in ret}
    resolv = by_id["base-resolv-conf"]
    assert resolv.result in (None, True)
    assert "Traceback" not in str(ret.raw)
    for state in ret:
        assert state.result is not False, state


def test_rendered_files_show_the_level_and_dns(make_loaders):
    loaders = make_loaders("db2")
    rendered = loaders.modules.slsutil.renderer(
        string=(STATES / "base" / "files" / "resolv.conf.jinja").read_text(),
        default_renderer="jinja",
        dns={"servers": ["10.10.10.2"], "search": ["production.wpdn"]},
    )
    assert "nameserver 10.10.10.2" in rendered and "search production.wpdn" in rendered
    high = loaders.modules.state.show_sls("base")
    hosts_block = high["base-hosts-entries"]["file"]
    content = next(arg["content"] for arg in hosts_block if isinstance(arg, dict) and "content" in arg)
    assert "10.10.10.11 db1-masterdb.production.wpdn db1-masterdb masterdb.production.wpdn masterdb" in content
    assert "10.10.10.12 db2.production.wpdn db2" in content


def test_without_rolestack_pillar_the_role_fails_clearly(make_loaders):
    loaders = make_loaders("app1", ext_pillar=[])
    ret = loaders.modules.state.sls("base", test=True)
    assert ret.failed
    assert "is the rolestack ext_pillar configured" in str(ret.raw)


def test_resolver_untouched_while_the_dns_server_address_is_pending(make_loaders, pillar_tree):
    inventory = pillar_tree / "inventory.yaml"
    data = yaml.safe_load(inventory.read_text())
    data["hosts"]["salt"] = {}
    inventory.write_text(yaml.safe_dump(data))
    ret = make_loaders("app1").modules.state.sls("base", test=True)
    assert not ret.failed, ret.raw
    assert "base-resolv-conf" not in {state.id for state in ret}


def test_the_extensions_are_synced_only_when_this_minion_does_not_hold_what_the_master_serves(make_loaders, tmp_path):
    """The ext_pillar's extensions_digest (of what the file roots serve) against this minion's copies: syncs in
    the run while they differ, none once the minion holds the same files (each sync asks the master for every
    file's hash)."""
    from tests.support.paths import REPO

    # without salt's own sync at each run, as the base role configures minions (autoload_dynamic_modules)
    loaders = make_loaders("app1", file_roots={"base": [str(STATES), str(REPO)]}, autoload_dynamic_modules=False)
    ext = Path(loaders.opts["extension_modules"])
    shutil.rmtree(ext, ignore_errors=True)
    syncs = {f"base-sync-{kind}" for kind in ("utils", "modules", "states")}
    assert loaders.modules.pillar.get("rolestack:extensions_digest")
    assert syncs <= set(loaders.modules.state.show_sls("base")), "no copies here: sync"
    for kind in ("utils", "modules", "states"):
        shutil.copytree(REPO / f"_{kind}", ext / kind, ignore=shutil.ignore_patterns("__pycache__"))
    assert not syncs & set(loaders.modules.state.show_sls("base")), "the same files: no sync"
    (ext / "utils" / "rolestack_gtid.py").write_text("# an older copy\n")
    assert syncs <= set(loaders.modules.state.show_sls("base")), "one file differs: sync"
