"""
The salt role's rsync source: the SLS with the derived pillar (dry run), and a real rsync daemon on 127.0.0.1
(its own config rendered by rolestack_rsync.render_config, its own port and directories under tmp_path, stopped
by PID) pulled from with the execution module rolestack_rsync.pull and a plain rsync client: an allowed pull with
the right secret works; a wrong secret, a host not in ``hosts allow``, a module the host may not pull and an upload
to a read-only module are refused. xinetd is not needed: it only starts the same daemon per connection.
"""

import os
import shutil
import subprocess

import pytest
import rolestack_rsync as rsync
import yaml
from salt.exceptions import CommandExecutionError

from tests.support.services import PrivateRsyncd

SECRET = "files-secret-0123456789"
WRONG = "wrong-secret-9876543210"

needs_rsync = pytest.mark.skipif(
    not shutil.which("rsync") or os.geteuid() != 0,
    reason="needs rsync and root (the daemon chroots and drops to nobody)",
)


def _module(path, hosts_allow, read_only=True):
    spec = {
        "path": str(path),
        "read_only": read_only,
        "roles": ["app"],
        "hosts_allow": hosts_allow,
        "auth_user": path.name,
        "comment": f"test module {path.name}",
    }
    return dict(spec, readme=rsync.module_readme(path.name, spec))


@pytest.fixture
def private_rsyncd(tmp_path):
    """start({name: hosts_allow}, writable=()) -> a real rsync daemon on 127.0.0.1 serving those modules."""
    started = []

    def start(modules, writable=()):
        served = {}
        for name, hosts_allow in modules.items():
            path = tmp_path / "srv" / name
            path.mkdir(parents=True)
            path.chmod(0o755)
            (path / "hello.txt").write_text(f"hello from {name}\n")
            (path / "README.md").write_text("managed by the test\n")
            served[name] = _module(path, hosts_allow, read_only=name not in writable)
            if name in writable:
                os.chown(path, *_nobody())
        secrets_file = tmp_path / "rsyncd.secrets"
        secrets_file.write_text(rsync.render_secrets(served, dict.fromkeys(served, SECRET)))
        secrets_file.chmod(0o600)
        config = tmp_path / "rsyncd.conf"
        config.write_text(rsync.render_config(served, str(secrets_file)))
        daemon = PrivateRsyncd(tmp_path, config)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.stop()


def _nobody():
    import grp
    import pwd

    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


@pytest.fixture
def client_loaders(pillar_loaders):
    """client(modules, secrets) -> the rolestack_rsync module of minion app1 with that rsync_client pillar."""

    def client(port, modules, secrets):
        pillar = {
            "rolestack": {
                "platform": {"zone": "production.wpdn"},
                "host": {"name": "app1", "roles": ["app"]},
                "rsync_client": {
                    "server": "salt.production.wpdn",
                    "address": "127.0.0.1",
                    "port": port,
                    "modules": {name: {"user": name, "read_only": True, "comment": ""} for name in modules},
                },
                "secrets": {"rsync_modules": secrets},
            }
        }
        return pillar_loaders("app1", pillar).modules.rolestack_rsync

    return client


def test_salt_rsync_dry_run_uses_the_derived_pillar(make_loaders):
    loaders = make_loaders("salt")
    high = loaders.modules.state.show_sls("salt.rsync")
    assert isinstance(high, dict), high
    server = loaders.modules.pillar.get("rolestack:rsync_server", unmask=True)

    def arg(state_id, key):
        return next(a[key] for a in next(iter(high[state_id].values())) if isinstance(a, dict) and key in a)

    assert arg("salt-rsync-config", "contents") == server["config"]
    assert "hosts allow = 10.10.10.51 10.10.10.52" in server["config"]
    assert arg("salt-rsync-secrets", "mode") == "0600" and arg("salt-rsync-secrets", "show_changes") is False
    assert arg("salt-rsync-secrets", "contents") == ["files:example-rsync-files-0123456789"]
    assert arg("salt-rsync-module-files", "name") == "/srv/rsync/files"
    assert "Managed by salt" in arg("salt-rsync-module-files-readme", "contents")
    assert arg("salt-rsync-xinetd", "watch") == [{"file": "salt-rsync-xinetd-entry"}]
    ret = loaders.modules.state.sls("salt.rsync", test=True)
    assert not ret.failed, ret.raw
    assert all(state.result is not False for state in ret), ret.raw


def test_salt_rsync_refuses_another_host(make_loaders):
    ret = make_loaders("app1").modules.state.sls("salt.rsync", test=True)
    assert ret.failed and "salt.rsync applies only to the host with role salt" in str(ret.raw)


@needs_rsync
def test_an_allowed_pull_with_the_right_secret_works(private_rsyncd, client_loaders, tmp_path):
    daemon = private_rsyncd({"files": ["10.10.10.51", "127.0.0.1"]})
    module = client_loaders(daemon.port, ["files"], {"files": SECRET})
    dest = tmp_path / "dest"
    result = module.pull("files", str(dest))
    assert result["transferred"] == ["hello.txt"] and result["dest"] == str(dest)
    assert (dest / "hello.txt").read_text() == "hello from files\n"
    assert not (dest / "README.md").exists(), "the README is hidden from pulls"
    assert module.pull("files", str(dest))["transferred"] == []  # nothing new


@needs_rsync
def test_a_wrong_secret_is_refused_by_the_daemon(private_rsyncd, client_loaders, tmp_path):
    daemon = private_rsyncd({"files": ["127.0.0.1"]})
    module = client_loaders(daemon.port, ["files"], {"files": WRONG})
    with pytest.raises(CommandExecutionError, match="@ERROR: auth failed on module files") as caught:
        module.pull("files", str(tmp_path / "dest"))
    assert WRONG not in str(caught.value)
    assert not (tmp_path / "dest" / "hello.txt").exists()


@needs_rsync
def test_a_host_not_in_hosts_allow_is_refused_by_the_daemon(private_rsyncd, client_loaders, tmp_path):
    daemon = private_rsyncd({"files": ["10.10.10.51", "10.10.10.52"]})
    assert "hosts allow = 10.10.10.51 10.10.10.52" in daemon.config.read_text()
    module = client_loaders(daemon.port, ["files"], {"files": SECRET})
    # rsync 3.x answers a host outside hosts allow as if the module did not exist, and logs the denial
    with pytest.raises(CommandExecutionError, match=r"@ERROR: Unknown module 'files' \(the daemon also answers so"):
        module.pull("files", str(tmp_path / "dest"))
    assert "rsync denied on module files from UNDETERMINED (127.0.0.1)" in daemon.log.read_text()


@needs_rsync
def test_a_module_the_host_may_not_pull_is_refused_before_any_connection(private_rsyncd, client_loaders, tmp_path):
    daemon = private_rsyncd({"files": ["127.0.0.1"], "drop": ["127.0.0.1"]})
    module = client_loaders(daemon.port, ["files"], {"files": SECRET})
    with pytest.raises(CommandExecutionError, match=r"app1 may not pull rsync module 'drop'.*may pull: files\)"):
        module.pull("drop", str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()
    with pytest.raises(CommandExecutionError, match="dest: got 'relative', expected an absolute"):
        module.pull("files", "relative")


@needs_rsync
def test_a_read_only_module_refuses_an_upload_and_a_writable_one_takes_it(private_rsyncd, tmp_path):
    daemon = private_rsyncd({"files": ["127.0.0.1"], "drop": ["127.0.0.1"]}, writable=("drop",))
    upload = tmp_path / "upload.txt"
    upload.write_text("from a client\n")
    env = dict(os.environ, RSYNC_PASSWORD=SECRET)

    def push(name):
        url = f"rsync://{name}@127.0.0.1:{daemon.port}/{name}/"
        return subprocess.run(["rsync", str(upload), url], env=env, capture_output=True, text=True, timeout=60)

    refused = push("files")
    assert refused.returncode != 0 and "module is read only" in refused.stderr, refused.stderr
    assert not (tmp_path / "srv" / "files" / "upload.txt").exists()
    accepted = push("drop")
    assert accepted.returncode == 0, accepted.stderr
    assert (tmp_path / "srv" / "drop" / "upload.txt").read_text() == "from a client\n"


def test_without_modules_nothing_is_served(make_loaders, pillar_tree):
    inventory = pillar_tree / "inventory.yaml"
    data = yaml.safe_load(inventory.read_text())
    del data["rsync"], data["secrets"]["rsync_modules"]
    inventory.write_text(yaml.safe_dump(data))
    loaders = make_loaders("salt")
    assert loaders.modules.pillar.get("rolestack:rsync_server") == ""
    ret = loaders.modules.state.sls("salt.rsync", test=True)
    assert not ret.failed, ret.raw
    assert sorted(state.id for state in ret) == ["salt-rsync-off", "salt-rsync-off", "salt-rsync-off"] + [
        "salt-rsync-xinetd-reload"
    ]
