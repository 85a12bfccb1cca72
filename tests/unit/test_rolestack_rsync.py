"""The rsync source's pure logic (_utils/rolestack_rsync.py): validation, derivation, rendering, the pull."""

import copy
import stat

import pytest
import rolestack_inventory as inv
import rolestack_rsync as rsync
import yaml

from tests.support.paths import PILLAR_EXAMPLE

SECRET = "example-rsync-files-0123456789"


@pytest.fixture
def example():
    return yaml.safe_load((PILLAR_EXAMPLE / "inventory.yaml").read_text())


def _with(example, modules=None, secrets=None):
    data = copy.deepcopy(example)
    if modules is not None:
        data["rsync"] = {"modules": modules}
    if secrets is not None:
        data["secrets"]["rsync_modules"] = secrets
    return data


def test_the_example_is_valid_and_optional(example):
    assert inv.validate(example) == []
    data = copy.deepcopy(example)
    del data["rsync"], data["secrets"]["rsync_modules"]
    assert inv.validate(data) == []
    hosts = inv.derive(data)["hosts"]
    assert not [name for name, pillar in hosts.items() if {"rsync_server", "rsync_client"} & set(pillar)]


REFUSALS = [
    # (rsync key, rsync secrets, expected fragment)
    ("not-a-mapping", None, "rsync: got a str of length 13, expected a mapping with keys modules"),
    ({"other": 1}, None, "rsync.other: unknown key (value: an int), expected one of modules"),
    ({"modules": ["files"]}, None, "rsync.modules: got a list, expected a mapping of module name to settings"),
    ({"modules": {"Files!": {}}}, None, "module name 'Files!' is not valid, expected a lowercase name"),
    ({"modules": {"files": "x"}}, None, "rsync.modules.files: got a str of length 1, expected a mapping with keys"),
    ({"modules": {"files": {"roles": ["app"]}}}, None, "rsync.modules.files.path: missing"),
    ({"modules": {"files": {"path": "srv/x", "roles": ["app"]}}}, None, "rsync.modules.files.path: got 'srv/x'"),
    ({"modules": {"files": {"path": "/srv/../etc", "roles": ["app"]}}}, None, "expected an absolute, normalized"),
    ({"modules": {"files": {"path": 5, "roles": ["app"]}}}, None, "rsync.modules.files.path: got 5 (an int)"),
    ({"modules": {"files": {"path": "/etc/ssl", "roles": ["app"]}}}, None, "expected a directory outside /bin"),
    ({"modules": {"files": {"path": "/", "roles": ["app"]}}}, None, "rsync.modules.files.path: got '/'"),
    ({"modules": {"files": {"path": "/srv/a"}}}, None, "rsync.modules.files.roles: missing"),
    ({"modules": {"files": {"path": "/srv/a", "roles": []}}}, None, "rsync.modules.files.roles: got [], expected a"),
    ({"modules": {"files": {"path": "/srv/a", "roles": ["web"]}}}, None, "rsync.modules.files.roles[0]: unknown role"),
    ({"modules": {"files": {"path": "/srv/a", "roles": ["app", "app"]}}}, None, "roles[1]: 'app' listed twice"),
    ({"modules": {"files": {"path": "/srv/a", "roles": ["app"], "writable": "yes"}}}, None, "writable: got 'yes'"),
    ({"modules": {"files": {"path": "/srv/a", "roles": ["app"], "comment": "a\nb"}}}, None, "comment: got 'a\\nb'"),
    ({"modules": {"files": {"path": "/srv/a", "roles": ["app"], "mode": 1}}}, None, "files.mode: unknown key"),
    (
        {"modules": {"files": {"path": "/srv/a", "roles": ["app"]}, "more": {"path": "/srv/a/b", "roles": ["app"]}}},
        {"files": SECRET, "more": SECRET},
        "rsync.modules.more.path: '/srv/a/b' overlaps the path '/srv/a' of module 'files'",
    ),
    ({"modules": {"files": {"path": "/srv/a", "roles": ["app"]}}}, {}, "secrets.rsync_modules.files: missing"),
    ({"modules": {"files": {"path": "/srv/a", "roles": ["app"]}}}, "x" * 20, "secrets.rsync_modules: got a str of"),
    (
        {"modules": {"files": {"path": "/srv/a", "roles": ["app"]}}},
        {"files": SECRET, "other": "y" * 20},
        "secrets.rsync_modules.other: no such module in rsync.modules (value: a str of length 20)",
    ),
    (
        {"modules": {"files": {"path": "/srv/a", "roles": ["app"]}}},
        {"files": "short-secret"},
        "secrets.rsync_modules.files: got a str of length 12, expected a string of at least 16 characters",
    ),
    (
        {"modules": {"files": {"path": "/srv/a", "roles": ["app"]}}},
        {"files": 1234567890123456789},
        "secrets.rsync_modules.files: got an int, expected a string",
    ),
]


@pytest.mark.parametrize("spec, secrets, expected", REFUSALS)
def test_every_refusal_names_the_key_path_and_what_was_expected(example, spec, secrets, expected):
    data = copy.deepcopy(example)
    data["rsync"] = spec
    if secrets is not None:
        data["secrets"]["rsync_modules"] = secrets
    errors = inv.validate(data)
    assert any(expected in error for error in errors), errors
    with pytest.raises(inv.InventoryError):
        inv.derive(data)
    # a secret's value is never quoted
    for value in (secrets or {}).values() if isinstance(secrets, dict) else ():
        assert not any(str(value) in error for error in errors)


def test_rsync_modules_is_a_known_secret_name(example):
    data = copy.deepcopy(example)
    data["secrets"]["rsync_module"] = SECRET
    (error,) = inv.validate(data)
    assert error.startswith("secrets.rsync_module: unknown secret") and "rsync_modules" in error


def test_server_and_clients_are_derived_from_the_roles(example):
    hosts = inv.derive(example, {"frontend1": ["10.10.10.61"]})["hosts"]
    server = hosts["salt"]["rsync_server"]
    files = server["modules"]["files"]
    assert files.pop("readme") == rsync.module_readme("files", files)
    assert files == {
        "path": "/srv/rsync/files",
        "read_only": True,
        "roles": ["app", "frontend"],
        "hosts_allow": ["10.10.10.51", "10.10.10.52", "10.10.10.61"],
        "auth_user": "files",
        "comment": "static files the web hosts pull",
    }
    assert server["secrets_file"] == "/etc/rsyncd.secrets" and server["config_file"] == "/etc/rsyncd.conf"
    assert "hosts allow = 10.10.10.51 10.10.10.52 10.10.10.61" in server["config"]
    assert "rsync_client" not in hosts["salt"]
    assert hosts["salt"]["secrets"]["rsync_modules"] == {"files": SECRET}
    for name in ("app1", "app2", "frontend1"):
        client = hosts[name]["rsync_client"]
        assert client["server"] == "salt.production.wpdn" and client["address"] == "10.10.10.2"
        assert client["modules"] == {"files": {"user": "files", "read_only": True, "comment": files["comment"]}}
        assert hosts[name]["secrets"]["rsync_modules"] == {"files": SECRET}
    for name in ("db2", "mail", "sessions1", "backup"):
        assert "rsync_client" not in hosts[name] and "rsync_modules" not in hosts[name].get("secrets", {})


def test_a_pending_host_is_in_no_hosts_allow_and_gets_no_secret(example):
    hosts = inv.derive(example)["hosts"]
    assert hosts["salt"]["rsync_server"]["modules"]["files"]["hosts_allow"] == ["10.10.10.51", "10.10.10.52"]
    assert "rsync_client" not in hosts["frontend1"] and "rsync_modules" not in hosts["frontend1"].get("secrets", {})


def test_a_module_without_hosts_denies_everyone_and_writable_is_honoured(example):
    modules = {
        "drop": {"path": "/srv/rsync/drop", "roles": ["jobrunner"], "writable": True},
        "files": {"path": "/srv/rsync/files", "roles": ["app"]},
    }
    data = _with(example, modules, {"drop": "d" * 16, "files": SECRET})
    assert inv.validate(data) == []
    server = inv.derive(data)["hosts"]["salt"]["rsync_server"]
    assert server["modules"]["drop"]["read_only"] is False and server["modules"]["drop"]["hosts_allow"] == []
    config = server["config"]
    drop = config.split("[drop]")[1].split("[files]")[0]
    assert "read only = no" in drop and "hosts allow" not in drop and "hosts deny = *" in drop
    assert "read only = yes" in config.split("[files]")[1]
    assert rsync.render_secrets(server["modules"], {"drop": "d" * 16, "files": SECRET}) == (
        f"drop:{'d' * 16}\nfiles:{SECRET}\n"
    )


def test_readme_says_what_manages_the_directory(example):
    server = inv.derive(example)["hosts"]["salt"]["rsync_server"]
    text = rsync.module_readme("files", server["modules"]["files"])
    assert "Managed by salt" in text and "rsync.modules.files" in text and "read-only" in text


CLIENT = {
    "server": "salt.production.wpdn",
    "address": "10.10.10.2",
    "port": 873,
    "modules": {"files": {"user": "files", "read_only": True, "comment": "c"}},
}


def test_a_module_not_allowed_is_refused_naming_what_may_be_pulled():
    assert rsync.choose_module(CLIENT, "files", "app1") == CLIENT["modules"]["files"]
    with pytest.raises(rsync.PullError, match=r"app1 may not pull rsync module 'drop'.*may pull: files\)"):
        rsync.choose_module(CLIENT, "drop", "app1")
    with pytest.raises(rsync.PullError, match=r"db2 may not pull .*may pull: none\)"):
        rsync.choose_module(None, "files", "db2")


def test_pull_command_keeps_the_secret_out_of_the_argv():
    argv = rsync.pull_command(CLIENT, "files", "/var/lib/files", delete=True)
    assert argv[-2:] == ["rsync://files@10.10.10.2:873/files/", "/var/lib/files/"]
    assert "--delete" in argv and not any(SECRET in arg for arg in argv)
    with pytest.raises(rsync.PullError, match="dest: got 'relative', expected an absolute"):
        rsync.pull_command(CLIENT, "files", "relative")


def test_run_pull_reports_the_refusal_without_the_secret(tmp_path):
    fake = tmp_path / "rsync"
    fake.write_text('#!/bin/sh\necho "@ERROR: auth failed on module files ($RSYNC_PASSWORD)" >&2\nexit 5\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    argv = rsync.pull_command(CLIENT, "files", str(tmp_path / "dest"), rsync=str(fake))
    with pytest.raises(rsync.PullError) as caught:
        rsync.run_pull(argv, SECRET)
    assert "@ERROR: auth failed on module files (<secret>)" in str(caught.value)
    assert SECRET not in str(caught.value) and "exit 5" in str(caught.value)
    fake.write_text("#!/bin/sh\necho ./\necho a.txt\n")
    assert rsync.run_pull(argv, SECRET) == ["a.txt"]


def test_clients_name_the_server_while_its_address_is_pending(example):
    data = copy.deepcopy(example)
    data["hosts"]["salt"] = {}
    hosts = inv.derive(data)["hosts"]
    client = hosts["app1"]["rsync_client"]
    assert client["address"] is None and client["server"] == "salt.production.wpdn"
    assert rsync.pull_command(client, "files", "/d")[-2] == "rsync://files@salt.production.wpdn:873/files/"
    assert hosts["salt"]["rsync_server"]["modules"]["files"]["hosts_allow"] == ["10.10.10.51", "10.10.10.52"]
