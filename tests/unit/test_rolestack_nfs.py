"""The NFS share of ElasticSearch snapshots (_utils/rolestack_nfs.py): validation, derivation, rendering."""

import copy

import pytest
import rolestack_elastic as es
import rolestack_inventory as inv
import rolestack_nfs as nfs
import yaml

from tests.support.paths import PILLAR_EXAMPLE


@pytest.fixture
def example():
    return yaml.safe_load((PILLAR_EXAMPLE / "inventory.yaml").read_text())


def _with_nfs(example, spec):
    data = copy.deepcopy(example)
    data["backup"] = {"nfs": spec}
    return data


def test_the_example_is_valid_and_backup_nfs_optional(example):
    assert inv.validate(example) == []
    data = copy.deepcopy(example)
    data.pop("backup", None)
    assert inv.validate(data) == []
    assert nfs.settings(data) == nfs.DEFAULTS
    full = {"server": "kernel", "uid": 3001, "gid": 3002, "path": "/srv/es-snapshots"}
    assert inv.validate(_with_nfs(example, full)) == []
    assert nfs.settings(_with_nfs(example, full)) == full
    assert inv.validate(dict(data, backup=None)) == [] and inv.validate(dict(data, backup={"nfs": None})) == []


REFUSALS = [
    # (backup key, expected fragments of the one error)
    # the backup mapping itself: one check, the backup engine's (rolestack_backup.BACKUP_KEYS, with nfs)
    ("yes", ["backup: got a str of length 3, expected a mapping with keys paths, retention, schedule, nfs"]),
    ({"exports": 3}, ["backup.exports: unknown key (value: an int), expected one of paths, retention, schedule, nfs"]),
    ({"nfs": ["ganesha"]}, ["backup.nfs: got a list, expected a mapping with keys server, uid, gid, path"]),
    ({"nfs": {"port": 2049}}, ["backup.nfs.port: unknown key (value: an int), expected one of server, uid, gid, path"]),
    (
        {"nfs": {"server": "knfsd"}},
        ["backup.nfs.server: got 'knfsd' (a str of length 5)", "expected one of ganesha, kernel"],
    ),
    ({"nfs": {"server": None}}, ["backup.nfs.server: got None (a NoneType)", "expected one of ganesha, kernel"]),
    ({"nfs": {"uid": 0}}, ["backup.nfs.uid: got 0 (an int), expected an integer from 1000 to 59999"]),
    ({"nfs": {"uid": "2500"}}, ["backup.nfs.uid: got '2500' (a str of length 4), expected an integer from 1000"]),
    ({"nfs": {"gid": True}}, ["backup.nfs.gid: got True (a bool), expected an integer from 1000 to 59999"]),
    ({"nfs": {"gid": 65534}}, ["backup.nfs.gid: got 65534 (an int), expected an integer from 1000 to 59999"]),
    ({"nfs": {"gid": 2.5}}, ["backup.nfs.gid: got 2.5 (a float)"]),
    (
        {"nfs": {"path": "srv/x"}},
        ["backup.nfs.path: got 'srv/x' (a str of length 5), expected an absolute, normalized"],
    ),
    ({"nfs": {"path": "/srv/../etc"}}, ["backup.nfs.path: got '/srv/../etc'", "expected an absolute, normalized"]),
    ({"nfs": {"path": "/srv/a b"}}, ["backup.nfs.path: got '/srv/a b'", "letters, digits and _.@+-"]),
    ({"nfs": {"path": "/etc/exports"}}, ["backup.nfs.path: got '/etc/exports', expected a directory outside /bin"]),
    ({"nfs": {"path": "/"}}, ["backup.nfs.path: got '/'"]),
    # the backup engine's root (rolestack_backup.ROOT): neither exported nor holding the export
    (
        {"nfs": {"path": "/srv/backup/es"}},
        ["backup.nfs.path: got '/srv/backup/es', expected a directory outside", "/srv/backup"],
    ),
    ({"nfs": {"path": "/srv"}}, ["backup.nfs.path: got '/srv', expected a directory outside", "/usr, /srv/backup"]),
    ({"nfs": {"path": 7}}, ["backup.nfs.path: got 7 (an int)"]),
]


@pytest.mark.parametrize(("backup", "fragments"), REFUSALS)
def test_a_bad_backup_nfs_key_is_refused_naming_its_path_type_and_expectation(example, backup, fragments):
    data = copy.deepcopy(example)
    data["backup"] = backup
    errors = inv.validate(data)
    assert len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in errors[0], errors
    with pytest.raises(inv.InventoryError) as raised:
        inv.derive(data)
    assert errors[0] in raised.value.errors


def test_every_problem_is_reported_at_once(example):
    errors = inv.validate(_with_nfs(example, {"server": "x", "uid": -1, "gid": "a", "path": "rel", "extra": 1}))
    assert sorted(error.split(":")[0] for error in errors) == [
        "backup.nfs.extra",
        "backup.nfs.gid",
        "backup.nfs.path",
        "backup.nfs.server",
        "backup.nfs.uid",
    ]


def test_the_backup_host_exports_to_the_elastic_hosts_only(example):
    hosts = inv.derive(example)["hosts"]
    share = hosts["backup"]["backup"]["nfs"]
    assert share["clients"] == ["10.10.10.41"]
    assert share["address"] == "10.10.10.4" and share["port"] == nfs.NFS_PORT
    assert (share["uid"], share["gid"], share["user"], share["path"]) == (
        2500,
        2500,
        "elasticsearch",
        nfs.DEFAULTS["path"],
    )
    assert share["server"] == "ganesha" and share["service"] == "nfs-ganesha" and share["reload"] is False
    assert share["packages"] == ["nfs-ganesha", "nfs-ganesha-vfs"]
    assert share["config_file"] == "/etc/ganesha/ganesha.conf" and share["config"] == nfs.render_ganesha(share)
    assert "rpcbind.socket" in share["masked"]
    # the backup host's other keys stay as they were
    assert hosts["backup"]["backup"]["nfs_clients"][0]["name"] == "elastic1"
    client = hosts["elastic1"]["elastic"]["nfs"]
    assert client["device"] == "10.10.10.4:/srv/exports/elasticsearch" and client["fstype"] == "nfs4"
    assert (client["uid"], client["gid"], client["user"], client["group"]) == (
        2500,
        2500,
        "elasticsearch",
        "elasticsearch",
    )
    assert client["mount_point"] == nfs.MOUNT_POINT and client["path_repo"] == 'path.repo: ["/mnt/elastic-snapshots"]'
    assert "hard" in client["opts"].split(",") and "soft" not in client["opts"]
    # the firewall guards port 2049 too: the elastic hosts only (besides loopback)
    assert {"name": "nfs", "port": 2049, "allow": ["10.10.10.41/32"]} in hosts["backup"]["firewall"]["services"]
    assert hosts["backup"]["firewall"]["services"][0]["name"] == "ssh"
    # nobody else gets the share's pillar
    for name, pillar in hosts.items():
        if name != "backup":
            assert "nfs" not in pillar["backup"], name
        if name != "elastic1":
            assert "nfs" not in (pillar.get("elastic") or {}), name
        if name != "backup":
            assert "nfs" not in [service["name"] for service in (pillar.get("firewall") or {}).get("services", [])]


def test_the_share_is_mounted_where_the_snapshot_repositories_live(example):
    # one value (rolestack_elastic.MOUNT_PATH): the mount and path.repo hold every cluster's repository location
    elastic = inv.derive(example)["hosts"]["elastic1"]["elastic"]
    assert elastic["nfs"]["mount_point"] == elastic["snapshots"]["mount"] == es.MOUNT_PATH
    assert elastic["snapshots"]["location"].startswith(elastic["nfs"]["mount_point"] + "/")
    assert elastic["nfs"]["path_repo"] == nfs.path_repo_line(elastic["snapshots"]["mount"])


def test_more_elastic_hosts_are_all_clients_and_pending_ones_none(example):
    data = copy.deepcopy(example)
    data["hosts"]["elastic2"] = {"address": "10.10.10.42", "cluster": "main"}
    data["hosts"]["elastic3"] = {"cluster": "main"}  # no address yet: pending
    hosts = inv.derive(data)["hosts"]
    assert hosts["backup"]["backup"]["nfs"]["clients"] == ["10.10.10.41", "10.10.10.42"]
    assert "Clients = 10.10.10.41, 10.10.10.42;" in hosts["backup"]["backup"]["nfs"]["config"]
    assert hosts["elastic2"]["elastic"]["nfs"] == hosts["elastic1"]["elastic"]["nfs"]


def test_no_elastic_host_closes_the_export_and_no_backup_host_means_no_share(example):
    data = copy.deepcopy(example)
    del data["hosts"]["elastic1"]
    data["aliases"].pop("elasticsearch")
    share = inv.derive(data)["hosts"]["backup"]["backup"]["nfs"]
    assert share["clients"] == [] and "CLIENT" not in share["config"] and "Access_Type = RW" not in share["config"]
    assert nfs.firewall_service(share) == {"name": "nfs", "port": 2049, "allow": []}  # loopback only
    data = copy.deepcopy(example)
    del data["hosts"]["backup"]
    del data["secrets"]["rsync_backup_secret"]
    derived = inv.derive(data)["hosts"]
    assert derived["elastic1"]["elastic"]["nfs"] is None
    assert nfs.derive(example, {"name": "backup", "address": None}, [{"address": "10.10.10.41"}]) == {
        "server": None,
        "client": None,
    }


def test_the_pillar_keys_follow_backup_nfs(example):
    spec = {"server": "kernel", "uid": 3001, "gid": 3002, "path": "/srv/es-snapshots"}
    hosts = inv.derive(_with_nfs(example, spec))["hosts"]
    share = hosts["backup"]["backup"]["nfs"]
    assert (share["server"], share["uid"], share["gid"], share["path"]) == ("kernel", 3001, 3002, "/srv/es-snapshots")
    assert share["service"] == "nfs-kernel-server" and share["reload"] is True and share["masked"] == []
    assert share["config_file"] == nfs.EXPORTS_FILE and share["config"] == nfs.render_exports(share)
    client = hosts["elastic1"]["elastic"]["nfs"]
    assert client["device"] == "10.10.10.4:/srv/es-snapshots" and (client["uid"], client["gid"]) == (3001, 3002)


def _server(**overrides):
    return {
        "address": "10.10.10.4",
        "port": 2049,
        "path": "/srv/exports/elasticsearch",
        "uid": 2500,
        "gid": 2500,
        "clients": ["10.10.10.41", "10.10.10.42"],
        **overrides,
    }


def _blocks(text):
    """ganesha.conf as {block path: {key: value}} (nested blocks joined by '/'), for the assertions."""
    blocks, stack = {}, []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("{"):
            stack.append(line[:-1].strip())
            blocks.setdefault("/".join(stack), {})
        elif line == "}":
            stack.pop()
        else:
            key, _, value = line.rstrip(";").partition("=")
            blocks["/".join(stack)][key.strip()] = value.strip()
    assert not stack
    return blocks


def test_ganesha_conf_is_nfsv4_only_bound_squashed_and_allows_the_clients_only():
    text = nfs.render_ganesha(_server())
    assert text.startswith(nfs.HEADER)
    blocks = _blocks(text)
    core = blocks["NFS_CORE_PARAM"]
    assert core == {
        "Protocols": "4",
        "Bind_addr": "10.10.10.4",
        "NFS_Port": "2049",
        "Enable_NLM": "false",
        "Enable_RQUOTA": "false",
        "Enable_UDP": "false",
    }
    export = blocks["EXPORT"]
    assert export["Path"] == export["Pseudo"] == '"/srv/exports/elasticsearch"'
    assert export["Protocols"] == "4" and export["Transports"] == "TCP" and export["SecType"] == "sys"
    assert export["Access_Type"] == "None" and blocks["EXPORT_DEFAULTS"]["Access_Type"] == "None"
    assert export["Squash"] == "root_squash" and (export["Anonymous_Uid"], export["Anonymous_Gid"]) == ("2500", "2500")
    assert blocks["EXPORT/FSAL"] == {"Name": "VFS"}
    assert blocks["EXPORT/CLIENT"] == {
        "Clients": "10.10.10.41, 10.10.10.42",
        "Access_Type": "RW",
        "Squash": "root_squash",
    }
    assert "RecoveryRoot" not in text and "Graceless" not in text
    assert text.count("EXPORT {") == 1


def test_ganesha_conf_without_clients_allows_nobody_and_a_private_instance_gets_its_recovery_dir():
    blocks = _blocks(nfs.render_ganesha(_server(clients=[])))
    assert "EXPORT/CLIENT" not in blocks and blocks["EXPORT"]["Access_Type"] == "None"
    private = _blocks(nfs.render_ganesha(_server(), recovery_root="/tmp/x/recovery", graceless=True))
    assert private["NFSV4"]["RecoveryRoot"] == '"/tmp/x/recovery"' and private["NFSV4"]["Graceless"] == "true"


def test_kernel_exports_line_allows_the_clients_only_root_squashed():
    text = nfs.render_exports(_server(uid=3001, gid=3002))
    assert text.startswith(nfs.HEADER)
    (line,) = [line for line in text.splitlines() if not line.startswith("#")]
    path, *clients = line.split()
    assert path == "/srv/exports/elasticsearch"
    options = "rw,sync,no_subtree_check,root_squash,anonuid=3001,anongid=3002,sec=sys"
    assert clients == [f"10.10.10.41({options})", f"10.10.10.42({options})"]
    # never a path without a client: it would be exported to every host
    closed = nfs.render_exports(_server(clients=[]))
    assert [line for line in closed.splitlines() if not line.startswith("#")] == []
