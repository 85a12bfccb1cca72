"""The rolestack ext_pillar through Salt's pillar loader: derivation, cache, sources, refusal."""

import ipaddress
import os
import pathlib
import subprocess
import time

import pytest
import salt.cache
import yaml
from salt.exceptions import SaltInvocationError


def _edit(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    # a new mtime even on a fast filesystem
    stamp = time.time() + 1
    os.utime(path, (stamp, stamp))


def test_each_minion_gets_its_roles_and_topology(ext_pillar):
    db2 = ext_pillar("db2")["rolestack"]
    assert db2["host"]["roles"] == ["db"]
    assert db2["db"]["masterdb"]["name"] == "db1-masterdb"
    assert "replication_password" in db2["secrets"]
    app1 = ext_pillar("app1")["rolestack"]
    sessions_redis = next(pool for pool in app1["proxy"]["pools"] if pool["name"] == "sessions_redis")
    assert sessions_redis["servers"][0]["address"] == "10.10.10.21"
    assert ext_pillar("memcache-alpha2")["rolestack"]["memcache"]["cluster"] == "alpha"
    assert "replication_password" not in app1["secrets"]
    stranger = ext_pillar("stranger")["rolestack"]
    assert stranger["host"] is None and "secrets" not in stranger


@pytest.mark.parametrize("minion_id", ["db2.production.wpdn", "salt.production.wpdn"])
def test_only_the_inventory_name_is_a_hosts_minion_id(ext_pillar, minion_id):
    # a key enrolled under a host's FQDN gets the common pillar: no secrets, no db data, no signing policies
    result = ext_pillar(minion_id)
    assert result == {"rolestack": ext_pillar("stranger")["rolestack"]}
    assert result["rolestack"]["host"] is None and "secrets" not in result["rolestack"]


def test_the_mine_of_an_fqdn_id_gives_no_address(ext_pillar):
    # only the host's own id (its inventory name) may tell the platform where the host is
    salt.cache.factory(ext_pillar.opts).store(
        "mine", "frontend1.production.wpdn", {"network.ip_addrs": ["10.10.10.61"]}
    )
    assert ext_pillar("frontend1")["rolestack"]["host"]["address"] is None
    assert ext_pillar("salt")["rolestack"]["pending"] == ["frontend1"]


def test_derivation_is_cached_per_inventory_version(ext_pillar, pillar_tree):
    ext_pillar("app1")
    cache_root = ext_pillar.opts["cachedir"] + "/rolestack/inventory"
    first = os.listdir(cache_root)
    assert len(first) == 1
    host_file = os.path.join(cache_root, first[0], "hosts", "app1.json")
    built = os.stat(host_file).st_mtime_ns
    ext_pillar("app1")
    ext_pillar("db2")
    assert os.stat(host_file).st_mtime_ns == built, "a render re-derived an unchanged inventory"
    _edit(pillar_tree / "inventory.yaml", lambda d: d["hosts"].update({"app3": {"address": "10.10.10.53"}}))
    app3 = ext_pillar("app3")["rolestack"]
    assert app3["host"]["roles"] == ["app"]
    assert os.listdir(cache_root) != first and len(os.listdir(cache_root)) == 1
    allow = [ipaddress.ip_network(block) for block in ext_pillar("sessions1")["rolestack"]["sessions"]["allow"]]
    assert any(ipaddress.ip_address("10.10.10.53") in block for block in allow)


def test_an_entry_being_replaced_never_serves_the_common_pillar_to_a_listed_host(ext_pillar):
    # master workers render pillars concurrently: one may read an entry while another replaces it
    assert ext_pillar("db2")["rolestack"]["host"]["name"] == "db2"
    cache_root = ext_pillar.opts["cachedir"] + "/rolestack/inventory"
    (entry,) = os.listdir(cache_root)
    entry_dir = os.path.join(cache_root, entry)
    os.remove(os.path.join(entry_dir, "hosts", "db2.json"))  # half-removed, as during a replacement
    # the half-read entry is not taken for the pillar of a host outside the inventory
    assert ext_pillar.read_entry(entry_dir, "db2") is None
    # the render builds again rather than keep the damaged entry
    os.remove(os.path.join(entry_dir, "meta.json"))
    assert ext_pillar("db2")["rolestack"]["host"] == {**ext_pillar("db2")["rolestack"]["host"], "name": "db2"}
    assert os.path.exists(os.path.join(cache_root, os.listdir(cache_root)[0], "hosts", "db2.json"))


def test_invalid_inventory_is_refused_with_every_error(ext_pillar, pillar_tree):
    def break_it(data):
        data["hosts"]["db2"]["roles"] = ["db", "masterdb"]
        data["hosts"]["app1"]["address"] = "10.99.0.1"

    _edit(pillar_tree / "inventory.yaml", break_it)
    with pytest.raises(SaltInvocationError) as err:
        ext_pillar("app1")
    message = str(err.value)
    assert "hosts.app1.address: 10.99.0.1 is outside the network 10.10.10.0/24" in message
    assert "role 'masterdb' is on db1-masterdb, db2" in message
    assert "inventory.yaml" in message
    # refused again from the cache, then served again once fixed
    with pytest.raises(SaltInvocationError):
        ext_pillar("db2")
    _edit(
        pillar_tree / "inventory.yaml",
        lambda d: (d["hosts"]["db2"].pop("roles"), d["hosts"]["app1"].update(address="10.10.10.51")),
    )
    assert ext_pillar("db2")["rolestack"]["db"]["is_master"] is False


def test_git_source_follows_commits(ext_pillar, pillar_tree, tmp_path):
    work = tmp_path / "work"
    bare = tmp_path / "pillar.git"
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }

    def git(*args, cwd=work):
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env=env)

    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    git("checkout", "-q", "-b", "main")
    (work / "inventory.yaml").write_text((pillar_tree / "inventory.yaml").read_text())
    git("add", "inventory.yaml")
    git("commit", "-qm", "initial")
    git("push", "-q", "origin", "main")
    source = {"git": {"repo": str(bare), "ref": "main", "path": "inventory.yaml"}}
    assert ext_pillar("db2", **source)["rolestack"]["host"]["address"] == "10.10.10.12"
    _edit(work / "inventory.yaml", lambda d: d["hosts"]["db2"].update(address="10.10.10.13"))
    git("commit", "-qam", "move db2")
    git("push", "-q", "origin", "main")
    assert ext_pillar("db2", **source)["rolestack"]["host"]["address"] == "10.10.10.13"
    _edit(work / "inventory.yaml", lambda d: d.update(level="Bad Level"))
    git("commit", "-qam", "bad edit")
    git("push", "-q", "origin", "main")
    with pytest.raises(SaltInvocationError, match=r"level: got 'Bad Level'"):
        ext_pillar("db2", **source)


def test_git_source_reads_a_packed_branch_without_a_git_process(ext_pillar, pillar_tree, tmp_path, monkeypatch):
    # git gc and mirror clones pack the refs: a render must not start a git process to find the branch
    repo = tmp_path / "pillar"
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *identity, *args], check=True, capture_output=True)

    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "inventory.yaml").write_text((pillar_tree / "inventory.yaml").read_text())
    git("add", "inventory.yaml")
    git("commit", "-qm", "initial")
    git("tag", "-a", "v1", "-m", "an annotated tag: a peeled line in packed-refs")
    git("pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    source = {"git": {"repo": str(repo), "ref": "main", "path": "inventory.yaml"}}
    assert ext_pillar("db2", **source)["rolestack"]["host"]["address"] == "10.10.10.12"  # derives: reads the file

    def no_process(*args, **kwargs):
        raise AssertionError(f"a cached render started {args}")

    with monkeypatch.context() as patched:
        patched.setattr(subprocess, "run", no_process)
        assert ext_pillar("db2", **source)["rolestack"]["host"]["address"] == "10.10.10.12"
        assert ext_pillar("stranger", **source)["rolestack"]["host"] is None
    # a commit on top of the packed branch (a loose ref again), then packed again: followed both times
    _edit(repo / "inventory.yaml", lambda d: d["hosts"]["db2"].update(address="10.10.10.13"))
    git("commit", "-qam", "move db2")
    assert ext_pillar("db2", **source)["rolestack"]["host"]["address"] == "10.10.10.13"
    _edit(repo / "inventory.yaml", lambda d: d["hosts"]["db2"].update(address="10.10.10.14"))
    git("commit", "-qam", "move db2 again")
    git("pack-refs", "--all")
    assert ext_pillar("db2", **source)["rolestack"]["host"]["address"] == "10.10.10.14"


def test_a_render_reads_no_list_of_every_host(ext_pillar):
    # a host's render reads meta.json and its own file only: its cost does not grow with the fleet
    ext_pillar("app1")
    cache_root = ext_pillar.opts["cachedir"] + "/rolestack/inventory"
    (entry,) = os.listdir(cache_root)
    entry_dir = os.path.join(cache_root, entry)
    assert "app1" not in (pathlib.Path(entry_dir) / "meta.json").read_text()
    hosts_list = os.path.join(entry_dir, "hosts.json")
    os.rename(hosts_list, hosts_list + ".aside")
    assert ext_pillar("app1")["rolestack"]["host"]["name"] == "app1"
    assert ext_pillar("db2.production.wpdn")["rolestack"]["host"] is None  # not a host name: no list needed
    # an id shaped like a host name without a file of its own needs the list (None: read again)
    assert ext_pillar.read_entry(entry_dir, "stranger") is None
    os.rename(hosts_list + ".aside", hosts_list)
    assert ext_pillar.read_entry(entry_dir, "stranger")["host"] is None


def test_the_pillar_key_source_is_refused(ext_pillar, pillar_tree):
    # it put the whole inventory, secrets included, in every minion's pillar
    from salt.exceptions import SaltConfigurationError

    inventory = yaml.safe_load((pillar_tree / "inventory.yaml").read_text())
    pillar = {"rolestack": {"inventory": inventory}}
    for minion_id in ("mail", "db2"):
        with pytest.raises(SaltConfigurationError, match="the pillar_key source was removed") as err:
            ext_pillar(minion_id, pillar=pillar, pillar_key="rolestack:inventory")
        assert inventory["secrets"]["replication_password"] not in str(err.value)


# salt 3008's master stores mine data in bank "mine" under the minion id (salt/daemons/masterapi.py _mine);
# salt before 3008 in bank "minions/<id>" under "mine"
@pytest.mark.parametrize("bank, key", [("mine", "frontend1"), ("minions/frontend1", "mine")])
def test_missing_address_is_read_from_the_mine(ext_pillar, bank, key):
    assert ext_pillar("frontend1")["rolestack"]["host"]["address"] is None
    opts = ext_pillar.opts
    salt.cache.factory(opts).store(bank, key, {"network.ip_addrs": ["10.10.10.61"]})
    assert ext_pillar("frontend1")["rolestack"]["host"]["address"] == "10.10.10.61"
    records = ext_pillar("salt")["rolestack"]["dns_zone"]["records"]
    assert {"name": "www", "type": "A", "data": "10.10.10.61"} in records


def test_a_mine_address_clash_refuses_the_pillar_until_the_mine_changes(ext_pillar):
    cache = salt.cache.factory(ext_pillar.opts)
    cache.store("mine", "frontend1", {"network.ip_addrs": ["10.10.10.12"]})  # db2's address
    with pytest.raises(
        SaltInvocationError, match=r"its mine address 10\.10\.10\.12 is already the inventory address of db2"
    ):
        ext_pillar("app1")
    with pytest.raises(SaltInvocationError, match="frontend1: its mine address"):
        ext_pillar("db2")
    time.sleep(1.1)  # the cache's update time has a resolution of a second
    cache.store("mine", "frontend1", {"network.ip_addrs": ["10.10.10.61"]})
    assert ext_pillar("db2")["rolestack"]["host"]["address"] == "10.10.10.12"
    assert ext_pillar("frontend1")["rolestack"]["host"]["address"] == "10.10.10.61"


def test_misconfiguration_is_reported(ext_pillar):
    from salt.exceptions import SaltConfigurationError

    with pytest.raises(SaltConfigurationError, match="exactly one"):
        ext_pillar("app1", inventory="inventory.yaml", git={"repo": "/nonexistent", "path": "inventory.yaml"})
    with pytest.raises(SaltConfigurationError, match="not found"):
        ext_pillar("app1", inventory="nope.yaml")


SENTINEL = "SENTINEL-pw-Zq7!x9"  # too short for a secret (16 characters at least): the inventory is refused


@pytest.mark.parametrize(
    "secrets_text",
    [
        f"secrets:\n  replication_password: {SENTINEL}\n",
        f"secrets:\n  replication_password: {SENTINEL}0123456789\n  replication_password: {SENTINEL}0123456789\n",
        f'secrets:\n  replication_password: "{SENTINEL}\n',
    ],
    ids=["too short", "duplicate key", "unclosed quote"],
)
def test_pillar_errors_and_the_master_log_never_show_a_secret(make_loaders, pillar_tree, caplog, secrets_text):
    inventory = pillar_tree / "inventory.yaml"
    text = inventory.read_text()
    inventory.write_text(text[: text.index("\nsecrets:") + 1] + secrets_text)
    with caplog.at_level("DEBUG"):
        pillar = make_loaders("db2").pillar
    errors = " ".join(pillar["_errors"])
    assert "invalid rolestack inventory" in errors and "rolestack" not in {k for k in pillar if k != "_errors"}
    assert "SENTINEL" not in errors  # not even a part of it (PyYAML's snippet shows the start of a long line)
    assert "invalid rolestack inventory" in caplog.text and "SENTINEL" not in caplog.text


def test_the_jump_box_known_hosts_follow_the_mine_at_each_compile(ext_pillar, tmp_path):
    # the salt host's known_hosts is built from the master's mine when its pillar is compiled (not cached with the
    # derivation): a replaced host's new keys are in it at once; only a host's own id speaks for it
    keydir = tmp_path / "keys"
    keydir.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keydir / "key")], check=True)
    key_type, blob = (keydir / "key.pub").read_text().split()[:2]
    before = ext_pillar("salt")["rolestack"]["jumpbox"]["known_hosts"]
    assert "# db2: no host key in the mine yet (its next highstate sends them)" in before.splitlines()
    cache = salt.cache.factory(ext_pillar.opts)
    cache.store("mine", "db2", {"ssh.host_keys": {"ssh_host_ed25519_key.pub": f"{key_type} {blob} root@db2"}})
    cache.store("mine", "db2.production.wpdn", {"ssh.host_keys": {"x.pub": f"{key_type} {blob}"}})
    lines = ext_pillar("salt")["rolestack"]["jumpbox"]["known_hosts"].splitlines()
    assert f"db2,db2.production.wpdn,10.10.10.12 {key_type} {blob}" in lines
    assert sum(blob in line for line in lines) == 1
    assert "jumpbox" not in ext_pillar("db2")["rolestack"]  # the salt host's only
