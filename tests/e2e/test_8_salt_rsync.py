"""
The salt host's rsync source in the lab (issue 12): the inventory's module `files` (roles app, frontend) is pulled
by app1 with `salt-call rolestack_rsync.pull` (its own secret, from its pillar); the daemon refuses a host the
inventory does not allow (db2) even with the right secret, and app1 with a wrong secret. The salt host's reverse
zone answers a PTR query for every host.
"""

import secrets

import pytest
import yaml

MODULE = "files"
ALLOWED, NOT_ALLOWED = "app1", "db2"


def inventory(lab):
    return yaml.safe_load((lab.pillar_repo / "inventory.yaml").read_text())


def raw_pull(lab, host, password):
    """rsync straight to the daemon from ``host`` as the module's user with ``password``: (exit code, output)."""
    proc = lab.sh(host, "env", f"RSYNC_PASSWORD={password}", "rsync", "-r", "--timeout=20",
                  f"rsync://{MODULE}@{lab.address('salt')}/{MODULE}/", "/tmp/rsync-probe/", check=False)  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def marker(lab):
    path = inventory(lab)["rsync"]["modules"][MODULE]["path"]
    name, content = f"e2e-{secrets.token_hex(4)}.txt", secrets.token_hex(8)
    lab.sh("salt", "sh", "-c", f"printf %s {content} > {path}/{name}")
    yield name, content
    lab.sh("salt", "rm", "-f", f"{path}/{name}")


def test_an_allowed_host_pulls_the_module_with_its_own_secret(lab, marker):
    name, content = marker
    ret = lab.salt(ALLOWED, "rolestack_rsync.pull", MODULE, "/tmp/rsync-e2e")[ALLOWED]
    assert isinstance(ret, dict) and name in ret["transferred"], ret
    assert lab.read(ALLOWED, f"/tmp/rsync-e2e/{name}") == content


def test_the_daemon_refuses_a_host_not_allowed_and_a_wrong_secret(lab, marker):
    secret = inventory(lab)["secrets"]["rsync_modules"][MODULE]
    code, out = raw_pull(lab, NOT_ALLOWED, secret)
    assert code != 0 and marker[0] not in out, out
    code, out = raw_pull(lab, ALLOWED, secret + "-wrong")
    assert code != 0 and "auth failed" in out, out
    # the control: the same command with the right secret from the allowed host works
    code, out = raw_pull(lab, ALLOWED, secret)
    assert code == 0, out
    # and the module refuses a host the inventory does not allow before it connects
    ret = lab.salt(NOT_ALLOWED, "rolestack_rsync.pull", MODULE, "/tmp/rsync-e2e")[NOT_ALLOWED]
    assert isinstance(ret, str) and MODULE in ret and "Traceback" not in ret, ret


def test_the_reverse_zone_answers_for_every_host(lab):
    for host in lab.hosts:
        answer = lab.sh("app1", "dig", "+short", "+time=2", "-x", lab.address(host)).stdout.split()
        assert answer and answer[0].startswith(f"{host}."), (host, answer)
