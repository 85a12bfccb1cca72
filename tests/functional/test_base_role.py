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


def _args(high, state_id, module="file"):
    merged = {}
    for arg in high[state_id][module]:
        if isinstance(arg, dict):
            merged.update(arg)
    return merged


def test_rendered_files_show_the_level_and_dns(make_loaders):
    loaders = make_loaders("db2")
    high = loaders.modules.state.show_sls("base")
    resolv = _args(high, "base-resolv-conf")
    assert resolv["name"] == "/etc/resolv.conf" and resolv["follow_symlinks"] is False
    assert resolv["contents"].splitlines()[1:3] == ["nameserver 10.10.10.2", "search production.wpdn"]
    for banner in ("/etc/issue.net", "/etc/motd"):
        text = _args(high, f"base-banner-{banner}")["contents"]
        assert " webplatform PRODUCTION -- db2 (db)" in text.splitlines() and "PRODUCTION: changes" in text
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


@pytest.mark.parametrize("minion_id", ["app1", "salt", "stranger"])
def test_the_files_are_written_from_the_pillar_without_a_template(make_loaders, tmp_path, minion_id):
    """Each file's text is the pillar's (derived by the ext_pillar): the minion fetches and renders no template.
    Written for real, by the SLS's own arguments, to a file of the test's (never the machine's)."""
    loaders = make_loaders(minion_id)
    rolestack = loaders.modules.pillar.get("rolestack", unmask=True)
    high = loaders.modules.state.show_sls("base")
    wanted = {
        "base-resolv-conf": rolestack["dns"]["resolv_conf"],
        "base-banner-/etc/issue.net": rolestack["banner"]["issue_net"],
        "base-banner-/etc/motd": rolestack["banner"]["motd"],
        "ssh-sshd-config": rolestack["ssh"]["sshd_config"],
    }
    if minion_id == "app1":
        wanted["firewall-ruleset"] = rolestack["firewall"]["ruleset"]
    assert ("firewall-ruleset" in high) is (minion_id == "app1")
    for state_id, text in wanted.items():
        args = _args(high, state_id)
        assert "source" not in args and "template" not in args, state_id
        assert args["contents"] == text and text.endswith("\n") and not text.endswith("\n\n"), state_id
        path = tmp_path / state_id.replace("/", "_")
        ret = loaders.modules.state.single("file.managed", name=str(path), contents=args["contents"])
        assert ret.result is True, ret
        assert path.read_text() == text, state_id
    # the jump box's ssh configuration after login only, on the jump box only
    assert ("Host salt salt.production.wpdn" in wanted["base-banner-/etc/motd"]) is (minion_id == "salt")
    assert "Host " not in wanted["base-banner-/etc/issue.net"]
    # no state of the role is rendered from a template on the minion any more
    assert not [sid for sid, body in high.items() if "template" in str(body)]


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
