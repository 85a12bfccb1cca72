"""
The NFS share of ElasticSearch snapshots (docs/roles/backup.md, "NFS share").

A real ganesha.nfsd runs with the configuration rolestack_nfs renders for the backup host (NFSv4 only, FSAL VFS,
root squashed to the fixed uid/gid), in a private network namespace (``unshare --net``: loopback up, 127.0.0.2/8
added, so nothing listens or is sent outside it) and a private /run, with its own directories, log and pid file,
stopped by its PID. The libnfs client (``nfs-ls``, ``nfs-cp``, ``nfs-cat``) runs inside that network namespace
(``nsenter --net``) and always connects from 127.0.0.1: the server allowing 127.0.0.1 stands for an elastic host's
view, the one allowing only 127.0.0.2 for a host that is not elastic. The states are only rendered and dry-run (test=True): they install
packages and mount file systems.
"""

import os
import shutil
import subprocess

import pytest
import rolestack_inventory as inv
import rolestack_nfs as nfs
import yaml

from tests.support.highdata import state_arg as _arg
from tests.support.paths import EXAMPLE_INVENTORY
from tests.support.services import PrivateService

UID = GID = 2500  # the export's anonymous (squashed) uid/gid and the elasticsearch account's
OTHER_UID = 1234  # a local user of an elastic host that is not ElasticSearch
ALLOWED, NOT_ALLOWED = "127.0.0.1", "127.0.0.2"

needs_ganesha = pytest.mark.skipif(
    os.geteuid() != 0
    or not all(shutil.which(tool) for tool in ("ganesha.nfsd", "nfs-ls", "nfs-cp", "nfs-cat", "unshare", "nsenter")),
    reason="needs root, nfs-ganesha(-vfs), libnfs-utils and util-linux (make test installs them)",
)


class PrivateGanesha(PrivateService):
    """ganesha.nfsd in the foreground, alone in a network namespace, bound to 127.0.0.1 (the backup host)."""

    kind = "ganesha"
    binary = "ganesha.nfsd"

    def __init__(self, root, clients, **options):
        super().__init__(root, **options)
        self.export = self.root / "export"
        self.config = self.root / "ganesha.conf"
        self.nfsd_log = self.root / "nfsd.log"
        self.server = {
            "address": ALLOWED,
            "port": self.port,
            "path": str(self.export),
            "uid": UID,
            "gid": GID,
            "clients": clients,
        }

    def prepare(self):
        self.export.mkdir()
        os.chown(self.export, UID, GID)
        self.export.chmod(0o770)
        (self.root / "recovery").mkdir()
        self.config.write_text(nfs.render_ganesha(self.server, recovery_root=self.root / "recovery", graceless=True))

    def command(self):
        # 127.0.0.2/8 on lo: a second local address, and an IPv4 address other than 127.0.0.1; fd00::1 an IPv6
        # address other than ::1 (ganesha resolves Bind_addr with getaddrinfo's AI_ADDRCONFIG, which counts neither
        # loopback address: with no IPv4 one it refuses to start, with no IPv6 one its IPv6 socket ignores
        # Bind_addr and listens on every address). A private /run (a mount namespace): ganesha keeps its callback
        # credentials in /run/ganesha. exec: the PID we hold is ganesha's
        script = (
            "ip link set lo up && ip addr add 127.0.0.2/8 dev lo && ip -6 addr add fd00::1/128 dev lo"
            ' && mount -t tmpfs tmpfs /run && exec "$@"'
        )
        namespaces = ["unshare", "--net", "--mount", "--propagation", "private"]
        return [*namespaces, "sh", "-c", script, "sh", self.binary, "-F", "-f", str(self.config)] + [
            "-L",
            str(self.nfsd_log),
            "-p",
            str(self.root / "ganesha.pid"),
            "-N",
            "NIV_EVENT",
        ]

    def ready(self):
        return self.nfsd_log.exists() and "NFS SERVER INITIALIZED" in self.nfsd_log.read_text(errors="replace")

    def url(self, name="", uid=None, gid=None, host=ALLOWED):
        query = f"version=4&nfsport={self.port}"
        if uid is not None:
            query += f"&uid={uid}&gid={gid}"
        return f"nfs://{host}{self.export}/{name}?{query}"

    def client(self, *argv):
        """A libnfs tool inside the server's network namespace (it connects from 127.0.0.1)."""
        return subprocess.run(
            ["nsenter", "--net", f"--target={self.pid}", *argv], capture_output=True, text=True, timeout=60
        )


@pytest.fixture(scope="module")
def ganesha(test_root):
    """start(clients) -> a started PrivateGanesha exporting a fresh directory to those addresses."""
    started = []

    def start(clients):
        server = PrivateGanesha(test_root, clients)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def elastic_view(ganesha):
    return ganesha([ALLOWED])


@pytest.fixture(scope="module")
def other_view(ganesha):
    return ganesha([NOT_ALLOWED])


@pytest.fixture
def upload(tmp_path):
    source = tmp_path / "snapshot-part"
    source.write_text("index data\n")
    return source


@needs_ganesha
def test_an_allowed_client_lists_writes_and_reads_as_the_elasticsearch_uid(elastic_view, upload):
    copied = elastic_view.client("nfs-cp", str(upload), elastic_view.url("es.dat", uid=UID, gid=GID))
    assert copied.returncode == 0, copied.stderr
    written = elastic_view.export / "es.dat"
    assert written.read_text() == "index data\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (UID, GID)
    listed = elastic_view.client("nfs-ls", elastic_view.url(uid=UID, gid=GID))
    assert listed.returncode == 0 and "es.dat" in listed.stdout, listed
    read = elastic_view.client("nfs-cat", elastic_view.url("es.dat", uid=UID, gid=GID))
    assert read.returncode == 0 and read.stdout == "index data\n", read


@needs_ganesha
def test_root_is_squashed_to_the_anonymous_uid_and_other_users_are_refused(elastic_view, upload):
    # the directory (2500:2500, 0770) lets root in either way: only squashing makes the file 2500's, not 0's
    as_root = elastic_view.client("nfs-cp", str(upload), elastic_view.url("root.dat", uid=0, gid=0))
    assert as_root.returncode == 0, as_root.stderr
    info = (elastic_view.export / "root.dat").stat()
    assert (info.st_uid, info.st_gid) == (UID, GID)
    # root_squash, not all_squash: another local user keeps its uid, and the directory's mode refuses it
    other = elastic_view.client("nfs-cp", str(upload), elastic_view.url("other.dat", uid=OTHER_UID, gid=OTHER_UID))
    assert other.returncode != 0 and "NFS4ERR_ACCESS" in other.stdout + other.stderr, other
    assert not (elastic_view.export / "other.dat").exists()


@needs_ganesha
def test_a_client_address_not_in_the_list_is_refused(elastic_view, other_view, upload):
    # the same configuration but for the CLIENT list (127.0.0.2 only): the server answers, the export stays shut
    listed = other_view.client("nfs-ls", other_view.url(uid=UID, gid=GID))
    assert listed.returncode != 0, listed
    assert "NFS4ERR" in listed.stdout + listed.stderr, listed  # refused by the server, not a dead connection
    copied = other_view.client("nfs-cp", str(upload), other_view.url("intruder.dat", uid=UID, gid=GID))
    assert copied.returncode != 0, copied
    assert list(other_view.export.iterdir()) == []
    # the control: the server allowing 127.0.0.1 answers the same request
    assert elastic_view.client("nfs-ls", elastic_view.url(uid=UID, gid=GID)).returncode == 0


@needs_ganesha
def test_the_server_listens_on_the_backup_hosts_address_only(elastic_view):
    sockets = elastic_view.client("ss", "-Hltn").stdout.split("\n")
    listening = [line.split()[3] for line in sockets if line.strip()]
    assert listening == [f"[::ffff:127.0.0.1]:{elastic_view.port}"], sockets
    elsewhere = elastic_view.client("nfs-ls", elastic_view.url(uid=UID, gid=GID, host=NOT_ALLOWED))
    assert elsewhere.returncode != 0, elsewhere


def test_the_backup_hosts_firewall_admits_nfs_from_the_elastic_hosts_only(make_loaders):
    module = make_loaders("backup").modules.rolestack_kv
    text = module.firewall_ruleset()
    assert "tcp dport 2049 ip saddr @nfs_allow_v4 accept" in text and "tcp dport 2049 drop" in text
    assert "elements = { 10.10.10.41/32 }" in text and 'tcp dport 2049 iif "lo" accept' in text
    assert "tcp dport 22 ip saddr @ssh_allow_v4 accept" in text  # the host's other guarded port stays
    if shutil.which("nft"):
        assert module.firewall_check() is True  # nft -c: nothing loaded


# the states: rendered and dry-run only


def test_backup_nfs_dry_run_uses_the_derived_pillar(make_loaders):
    loaders = make_loaders("backup")
    share = loaders.modules.pillar.get("rolestack:backup:nfs", unmask=True)
    high = loaders.modules.state.show_sls("backup.nfs")
    assert isinstance(high, dict), high
    assert _arg(high, "backup-nfs-config", "contents") == share["config"] == nfs.render_ganesha(share)
    assert _arg(high, "backup-nfs-config", "name") == "/etc/ganesha/ganesha.conf"
    assert _arg(high, "backup-nfs-packages", "pkgs") == ["nfs-ganesha", "nfs-ganesha-vfs"]
    assert _arg(high, "backup-nfs-export-dir", "name") == "/srv/exports/elasticsearch"
    assert _arg(high, "backup-nfs-export-dir", "mode") == "0770"
    assert _arg(high, "backup-nfs-user", "uid") == 2500 and _arg(high, "backup-nfs-group", "gid") == 2500
    assert _arg(high, "backup-nfs-service", "name") == "nfs-ganesha"
    assert _arg(high, "backup-nfs-service", "reload") is False
    assert _arg(high, "backup-nfs-service", "watch") == [{"file": "backup-nfs-config"}]
    assert _arg(high, "backup-nfs-mask-rpcbind.socket", "target") == "/dev/null"
    assert "rolestack_service" in high["backup-nfs-service"]
    ret = loaders.modules.state.sls("backup.nfs", test=True)
    assert not ret.failed, ret.raw
    assert all(state.result is not False for state in ret), ret.raw


def test_backup_nfs_kernel_server_from_the_pillar(make_loaders, pillar_tree):
    inventory = pillar_tree / "inventory.yaml"
    data = yaml.safe_load(inventory.read_text())
    data["backup"] = {"nfs": {"server": "kernel", "uid": 3001, "gid": 3002}}
    inventory.write_text(yaml.safe_dump(data))
    high = make_loaders("backup").modules.state.show_sls("backup.nfs")
    assert isinstance(high, dict), high
    assert _arg(high, "backup-nfs-config", "name") == nfs.EXPORTS_FILE
    assert "10.10.10.41(rw,sync,no_subtree_check,root_squash,anonuid=3001,anongid=3002,sec=sys)" in _arg(
        high, "backup-nfs-config", "contents"
    )
    assert _arg(high, "backup-nfs-packages", "pkgs") == ["nfs-kernel-server"]
    assert _arg(high, "backup-nfs-service", "name") == "nfs-kernel-server"
    assert _arg(high, "backup-nfs-service", "reload") is True
    assert not [state_id for state_id in high if state_id.startswith("backup-nfs-mask-")]


def test_elastic_nfs_dry_run_mounts_the_share_and_sets_path_repo(make_loaders):
    loaders = make_loaders("elastic1")
    share = loaders.modules.pillar.get("rolestack:elastic:nfs", unmask=True)
    high = loaders.modules.state.show_sls("elastic.nfs")
    assert isinstance(high, dict), high
    assert _arg(high, "elastic-nfs-mount", "device") == share["device"] == "10.10.10.4:/srv/exports/elasticsearch"
    assert _arg(high, "elastic-nfs-mount", "fstype") == "nfs4"
    assert _arg(high, "elastic-nfs-mount", "name") == "/mnt/elastic-snapshots"
    assert _arg(high, "elastic-nfs-user", "uid") == 2500 and _arg(high, "elastic-nfs-group", "gid") == 2500
    # no ElasticSearch here: path.repo waits for its configuration file (checked while rendering)
    assert "test" in high["elastic-nfs-path-repo"] and share["es_config"] in _arg(high, "elastic-nfs-path-repo", "text")
    ret = loaders.modules.state.sls("elastic.nfs", test=True)
    assert not ret.failed, ret.raw
    assert all(state.result is not False for state in ret), ret.raw


def test_elastic_nfs_sets_path_repo_once_elasticsearch_is_installed(make_loaders, tmp_path):
    """The derived pillar of elastic1, its ElasticSearch configuration a file of the test's."""
    es_config = tmp_path / "elasticsearch.yml"
    es_config.write_text("cluster.name: main\n")
    derived = inv.derive(yaml.safe_load(EXAMPLE_INVENTORY.read_text()))["hosts"]["elastic1"]
    derived["elastic"]["nfs"]["es_config"] = str(es_config)
    tree = tmp_path / "elastic1-pillar"  # (make_loaders' own tree is tmp_path / "pillar")
    tree.mkdir()
    (tree / "top.sls").write_text("base:\n  '*':\n    - rolestack\n")
    (tree / "rolestack.sls").write_text(yaml.safe_dump({"rolestack": derived}))
    loaders = make_loaders("elastic1", ext_pillar=[], pillar_roots={"base": [str(tree)]})
    high = loaders.modules.state.show_sls("elastic.nfs")
    assert isinstance(high, dict), high
    assert _arg(high, "elastic-nfs-path-repo", "content") == 'path.repo: ["/mnt/elastic-snapshots"]'
    assert _arg(high, "elastic-nfs-path-repo", "name") == str(es_config)
    assert _arg(high, "elastic-nfs-path-repo", "require") == [{"mount": "elastic-nfs-mount"}]
    ret = loaders.modules.state.sls("elastic.nfs", test=True)
    assert not ret.failed, ret.raw
    path_repo = next(state for state in ret if state.id == "elastic-nfs-path-repo")
    assert path_repo.result is None and 'path.repo: ["/mnt/elastic-snapshots"]' in str(path_repo.changes)
    assert es_config.read_text() == "cluster.name: main\n"  # a dry run


def test_without_a_backup_host_the_elastic_hosts_mount_nothing(make_loaders, pillar_tree):
    inventory = pillar_tree / "inventory.yaml"
    data = yaml.safe_load(inventory.read_text())
    del data["hosts"]["backup"], data["secrets"]["rsync_backup_secret"]
    inventory.write_text(yaml.safe_dump(data))
    ret = make_loaders("elastic1").modules.state.sls("elastic.nfs", test=True)
    assert not ret.failed, ret.raw
    assert [state.id for state in ret] == ["elastic-nfs-no-backup-host"]
    assert "no backup host" in next(iter(ret)).comment


@pytest.mark.parametrize(
    ("sls", "minion", "refusal"),
    [
        ("backup.nfs", "app1", "backup.nfs applies only to the host with role backup"),
        ("elastic.nfs", "backup", "elastic.nfs applies only to hosts with role elastic"),
    ],
)
def test_the_states_refuse_another_host(make_loaders, sls, minion, refusal):
    ret = make_loaders(minion).modules.state.sls(sls, test=True)
    assert ret.failed and refusal in str(ret.raw)
