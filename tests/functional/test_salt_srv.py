"""
/srv in git and the master's bootstrap (bootstrap/master.sh), for real, without changing this machine: every run
is in a private mount namespace where /etc, /var, /usr/local/sbin and /srv are overlays whose writes land in this
test's directory (kept between runs: the second bootstrap sees the first one's work). Then real pushes to the
bare repositories, through the hooks the bootstrap installed.
"""

import json
import shlex
import shutil
import subprocess
import textwrap

import pytest
import rolestack_inventory as inv
import yaml

from tests.support.paths import EXAMPLE_INVENTORY
from tests.support.paths import PILLAR_EXAMPLE
from tests.support.paths import REPO

pytestmark = pytest.mark.skipif(not shutil.which("unshare") or not shutil.which("git"), reason="unshare, git")

OVERLAID = ("/etc", "/var", "/usr/local/sbin", "/srv")
SECRET = "leaked-SECRET-value-0123456789"
GIT_ID = ["-c", "user.name=rolestack test", "-c", "user.email=test@rolestack.invalid"]


def _git(*args, cwd=None):
    return subprocess.run(["git", *GIT_ID, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _repo_from(tree, files):
    """A git repository (branch main) at tree holding files {relative path: source path}: one commit."""
    for rel, source in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, tree / rel, follow_symlinks=False)
    _git("init", "-q", "-b", "main", str(tree))
    _git("add", "-A", cwd=tree)
    _git("commit", "-q", "-m", "seed", cwd=tree)
    return tree


class Sandbox:
    def __init__(self, root):
        self.root = root
        self.mounts = []
        for path in OVERLAID:
            name = path.strip("/").replace("/", "-")
            upper, work = root / f"{name}-upper", root / f"{name}-work"
            upper.mkdir(parents=True)
            work.mkdir()
            self.mounts.append(f"mount -t overlay overlay -o lowerdir={path},upperdir={upper},workdir={work} {path}")

    def upper(self, path):
        top, _, rest = path.strip("/").partition("/")
        name = "usr-local-sbin" if path.startswith("/usr/local/sbin") else top
        rest = path.removeprefix("/usr/local/sbin/").lstrip("/") if name == "usr-local-sbin" else rest
        return self.root / f"{name}-upper" / rest

    def run(self, script, env=None):
        body = "set -e\n" + "\n".join(self.mounts) + "\n" + textwrap.dedent(script)
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", body],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )


def _states(ret):
    assert ret.returncode == 0, ret.stdout[-3000:] + ret.stderr[-3000:]
    return json.loads(ret.stdout)["local"]


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory):
    """The sandbox after two runs of bootstrap/master.sh --no-start, and each run's salt-call return."""
    root = tmp_path_factory.mktemp("srvgit")
    pillar_src = _repo_from(root / "pillar-src", {p.name: p for p in PILLAR_EXAMPLE.iterdir()})
    # the states repository: this checkout's files as they are now (committed or not)
    listed = _git("ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=REPO).split("\0")
    files = {rel: REPO / rel for rel in listed if rel and (REPO / rel).is_file() and not (REPO / rel).is_symlink()}
    states_src = _repo_from(root / "states-src", files)
    box = Sandbox(root / "box")
    script = f"""
        ROLESTACK_BOOTSTRAP_OUT=--out=json {states_src}/bootstrap/master.sh --pillar {pillar_src} \\
            --states {states_src} --python {REPO}/.venv/bin/python --no-start
    """
    box.first = _states(box.run(script))
    box.second = _states(box.run(script))
    box.states_src = states_src
    return box


def test_bootstrap_converges_then_changes_nothing(bootstrapped):
    assert all(state["result"] is True for state in bootstrapped.first.values()), bootstrapped.first
    assert any(state["changes"] for state in bootstrapped.first.values())
    assert all(state["result"] is True for state in bootstrapped.second.values()), bootstrapped.second
    changed = {key: state["changes"] for key, state in bootstrapped.second.items() if state["changes"]}
    assert changed == {}, changed


def test_the_master_config_accepts_no_key_unasked_and_serves_srv(bootstrapped):
    config = yaml.safe_load(bootstrapped.upper("/etc/salt/master.d/rolestack.conf").read_text())
    assert config["auto_accept"] is False
    assert config["open_mode"] is False
    assert not {"autosign_file", "autosign_grains_dir"} & set(config)
    assert config["ext_pillar"] == [
        {"rolestack": {"git": {"repo": "/srv/git/pillar.git", "ref": "main", "path": "inventory.yaml"}}}
    ]
    assert config["file_roots"] == {"base": ["/srv/salt/current/states", "/srv/salt/current"]}
    assert config["pillar_roots"] == {"base": ["/srv/pillar/current"]}
    assert config["pillar_dirs"] == ["/srv/salt/current/_pillar"]
    # nothing else in master.d or the master file turns acceptance by rule back on
    for path in bootstrapped.upper("/etc/salt").rglob("*"):
        if path.is_file() and path.suffix in (".conf", "") and path.parent.name in ("master.d", "salt"):
            text = path.read_text(errors="replace")
            assert "auto_accept: true" not in text.lower() and "open_mode: true" not in text.lower(), path


def test_salt_reads_the_config_as_written(bootstrapped, tmp_path):
    import salt.config

    shutil.copytree(bootstrapped.upper("/etc/salt/master.d"), tmp_path / "master.d")
    (tmp_path / "master").write_text(f"root_dir: {tmp_path / 'root'}\n")
    opts = salt.config.master_config(str(tmp_path / "master"))
    assert opts["auto_accept"] is False and opts["open_mode"] is False
    assert opts["peer"] == inv.master_acl(inv.load_yaml(EXAMPLE_INVENTORY.read_text()))["peer"]
    assert opts["peer_run"] == {}
    assert opts["ext_pillar"][0]["rolestack"]["git"]["repo"] == "/srv/git/pillar.git"


def test_the_peer_acl_is_the_inventorys_exactly(bootstrapped):
    acl = yaml.safe_load(bootstrapped.upper("/etc/salt/master.d/rolestack-peer.conf").read_text())
    assert acl == inv.master_acl(inv.load_yaml(EXAMPLE_INVENTORY.read_text()))
    assert acl["peer_run"] == {}


def test_the_masters_own_minion_is_accepted_with_its_own_key(bootstrapped):
    minion = yaml.safe_load(bootstrapped.upper("/etc/salt/minion.d/bootstrap.conf").read_text())
    assert minion["id"] == "salt" and minion["master"] == "127.0.0.1"
    pub = bootstrapped.upper("/etc/salt/pki/minion/minion.pub").read_text()
    assert "PUBLIC KEY" in pub
    assert bootstrapped.upper("/etc/salt/pki/master/minions/salt").read_text() == pub
    unit = bootstrapped.upper("/etc/systemd/system/salt-master.service").read_text()
    assert f"ExecStart={REPO}/.venv/bin/salt-master" in unit


def test_every_managed_directory_under_srv_says_what_manages_it(bootstrapped):
    for path in ("/srv", "/srv/git", "/srv/salt", "/srv/pillar"):
        readme = bootstrapped.upper(f"{path}/README.md").read_text()
        assert "Managed by the rolestack salt role" in readme and "states/salt/srv.sls" in readme, path
    pre_receive = bootstrapped.upper("/srv/git/pillar.git/hooks/pre-receive").read_text()
    assert "-m rolestack.cli validate" in pre_receive
    # the served trees are the seeded tips
    ret = bootstrapped.run("stat -c '%G %a' /srv/git/pillar.git /srv/pillar /srv/pillar/current/")
    assert ret.stdout.split("\n")[:3] == ["rolestack-config 2770"] * 3, ret.stdout + ret.stderr
    ret = bootstrapped.run("readlink /srv/salt/current; ls /srv/salt/current/states/salt/srv.sls /srv/pillar/current/")
    assert ret.returncode == 0, ret.stderr
    assert ret.stdout.startswith("releases/"), ret.stdout
    assert "top.sls" in ret.stdout


def _push(box, edit, message):
    """Clone /srv/git/pillar.git, run edit (shell, in the clone), commit and push; then what /srv/pillar serves."""
    work = box.root / f"work-{abs(hash(message))}"
    script = f"""
        git clone -q /srv/git/pillar.git {work}
        cd {work}
        {edit}
        git {shlex.join(GIT_ID)} commit -q -am {json.dumps(message)}
        before=$(readlink /srv/pillar/current)
        set +e
        git push -q origin main 2>{work}.stderr
        echo "push=$?"
        set -e
        echo "before=$before"
        echo "after=$(readlink /srv/pillar/current)"
        echo "tip=$(git --git-dir=/srv/git/pillar.git rev-parse main)"
        echo "head=$(git rev-parse HEAD)"
        cat /srv/pillar/current/top.sls
    """
    ret = box.run(script)
    assert ret.returncode == 0, ret.stdout + ret.stderr
    lines = dict(line.split("=", 1) for line in ret.stdout.splitlines() if "=" in line and " " not in line)
    lines["stderr"] = (box.root / f"{work.name}.stderr").read_text()
    lines["top"] = ret.stdout
    return lines


def test_an_invalid_inventory_push_is_refused_and_nothing_changes(bootstrapped):
    edit = (
        f"sed -i -e 's/replication_password: .*/replication_password: [{SECRET}]/' "
        "-e 's/address: 10.10.10.12/address: 10.99.10.12/' inventory.yaml; echo '# refused' >> top.sls"
    )
    got = _push(bootstrapped, edit, "an invalid inventory")
    assert got["push"] != "0"
    assert "hosts.db2.address: 10.99.10.12 is outside the network 10.10.10.0/24" in got["stderr"]
    assert "secrets.replication_password: got a list, expected a string" in got["stderr"]
    assert "pre-receive hook declined" in got["stderr"]
    assert SECRET not in got["stderr"] and SECRET not in got["top"]
    assert got["after"] == got["before"]
    assert got["tip"] != got["head"]
    assert "# refused" not in got["top"]


def test_a_valid_push_updates_the_served_tree(bootstrapped):
    got = _push(bootstrapped, "echo '# pushed and served' >> top.sls", "a valid change")
    assert got["push"] == "0", got["stderr"]
    assert got["tip"] == got["head"]
    assert got["after"] == f"releases/{got['head']}" != got["before"]
    assert "# pushed and served" in got["top"]


def test_a_push_without_the_inventory_or_deleting_main_is_refused(bootstrapped):
    got = _push(bootstrapped, "git rm -q inventory.yaml", "no inventory")
    assert got["push"] != "0"
    assert "has no inventory.yaml" in got["stderr"]
    assert got["after"] == got["before"]
    ret = bootstrapped.run("git --git-dir=/srv/git/pillar.git push /srv/git/pillar.git :refs/heads/main 2>&1 || true")
    assert "it cannot be deleted" in ret.stdout, ret.stdout + ret.stderr


def test_old_releases_are_pruned_and_the_served_one_kept(bootstrapped):
    for number in range(4):
        got = _push(bootstrapped, f"echo '# release {number}' >> top.sls", f"release {number}")
        assert got["push"] == "0", got["stderr"]
    ret = bootstrapped.run("ls /srv/pillar/releases; readlink /srv/pillar/current")
    releases, current = ret.stdout.split()[:-1], ret.stdout.split()[-1]
    assert len(releases) == 3, releases
    assert current == f"releases/{got['head']}" and got["head"] in releases


def test_a_yaml_error_in_a_secret_is_refused_without_quoting_it(bootstrapped):
    edit = f"sed -i 's/replication_password: .*/replication_password: \"{SECRET}/' inventory.yaml"
    got = _push(bootstrapped, edit, "a broken quote")
    assert got["push"] != "0"
    assert "invalid rolestack inventory in inventory.yaml@" in got["stderr"]
    assert SECRET not in got["stderr"] and SECRET[:12] not in got["stderr"]
    assert got["after"] == got["before"]


def test_the_bootstrap_refuses_an_invalid_inventory_and_leaves_nothing(tmp_path):
    bad = {p.name: p for p in PILLAR_EXAMPLE.iterdir()}
    (tmp_path / "bad.yaml").write_text(EXAMPLE_INVENTORY.read_text().replace("level: production", "level: Bad Level"))
    bad["inventory.yaml"] = tmp_path / "bad.yaml"
    pillar_src = _repo_from(tmp_path / "pillar-src", bad)
    box = Sandbox(tmp_path / "box")
    ret = box.run(f"{REPO}/bootstrap/master.sh --pillar {pillar_src} --python {REPO}/.venv/bin/python --no-start")
    assert ret.returncode == 1, ret.stdout + ret.stderr
    assert "level: got 'Bad Level'" in ret.stderr
    assert "nothing was bootstrapped" in ret.stderr
    assert not list(box.upper("/srv").rglob("*.git*"))  # neither pillar.git nor the aside pillar.git.new
    assert not box.upper("/etc/salt").exists()
