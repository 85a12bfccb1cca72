"""
The hostile battery of issue 9 (bench/support/security_checks.py, also run by `bench/security`) against the lab:

1. every check passes on the platform as it is;
2. every check can fail: each is run against a deliberately weakened platform and must report the hole, then the
   platform is restored (and the restoration verified), so the later tests find the lab as it was:
   - the master's peer ACL back to ``'.*'`` and ``auto_accept`` on (a master.d file, salt-master restarted in the
     salt host), and masterdb's ``serve_backup_stream`` replaced by one that listens wherever it is told
     (a weakened copy of the module in masterdb's extmods; ``saltutil.sync_all`` restores it);
   - the pillar tree exposing the whole inventory to every minion and a signing policy without restrictions on
     the CA (one commit pushed to the master's pillar repository with its pre-receive hook disabled, reverted, the
     hook put back by salt.srv);
   - the master's ``minion_key.admit`` replaced by one that trusts any pending key (the served tree's copy, the
     master's runner_dirs; written back), an accepted enrollment token left world-readable on one host and on a
     second host, a second writable db host, a replication account for an address outside the inventory;
   - the pillar repository's pre-receive hook disabled: an invalid inventory push is accepted (reverted at once;
     the hook put back by salt.srv);
   - sessions1's redis without its password (CONFIG SET requirepass "", set back) and its host firewall table
     deleted (the firewall state of its highstate puts it back).

Runs after the other test_8_* modules (it needs the lab converged, db1-masterdb the primary) and before
test_9_lab_down.
"""

import contextlib
import json
import secrets
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import rolestack_lab
from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "bench" / "support"))
import security_checks as checks

WEAK_MASTER_CONF = "zz-security-weakened.conf"
WEAK_MARKER = "# security battery: a deliberately weakened serve_backup_stream"
# appended to masterdb's copy of the module: the later definition replaces the real one (with its own imports: the
# module's listener lives in a util, the module imports no socket)
WEAK_STREAM = f"""

{WEAK_MARKER}: any caller, any address, port, bind and CA
import contextlib
import socket
import time


def serve_backup_stream(port, allow=None, ssl_cert=None, ssl_key=None, ssl_ca=None, bind="0.0.0.0", timeout=600,
                        **kwargs):
    listener = socket.create_server((bind, int(port)))
    listener.settimeout(1)
    deadline = time.monotonic() + min(float(timeout), 60)
    with listener:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                listener.accept()[0].close()
    return {{"peer": allow, "bytes": 0, "gtid": None}}
"""


def assert_every_check_fails(lab, names):
    results = checks.run_all(lab, names)
    held = {name: detail for name, (ok, detail) in results.items() if ok}
    assert not held, f"checks that did not see the weakened platform: {held}"


def test_the_hostile_battery_passes(lab):
    results = checks.run_all(lab)
    failed = {name: detail for name, (ok, detail) in results.items() if not ok}
    assert not failed, "\n".join(f"{name}: FAILED {detail}" for name, detail in failed.items())


# ---------------------------------------------------------------------------------------------------- the master


def restart_master(handle):
    """systemctl restart salt-master in the salt host (rolestack_lab.restart_master), until every minion answers."""
    rolestack_lab.restart_master(handle.lab)
    rolestack_lab.wait_minions(handle.lab, sorted(handle.lab.hosts))


@contextlib.contextmanager
def weakened_master(handle):
    """peer '.*' for both peer functions, peer_run '.*', auto_accept: a master.d file, the master restarted."""
    before = checks.Probe(handle).master_config()
    conf = handle.lab.master_dir / "master.d" / WEAK_MASTER_CONF
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(json.dumps({
        "peer": {".*": [checks.SIGN, checks.STREAM]},
        "peer_run": {".*": ["match.compound_matches"]},
        "auto_accept": True,
    }))  # fmt: skip
    try:
        restart_master(handle)
        yield
    finally:
        conf.unlink(missing_ok=True)
        restart_master(handle)
    after = checks.Probe(handle).master_config()
    for key in ("peer", "peer_run", "auto_accept"):
        assert after[key] == before[key], key


@contextlib.contextmanager
def weakened_stream(handle, host):
    """``host``'s mariadb_replication module with a serve_backup_stream that does whatever the caller asks."""
    probe = checks.Probe(handle)
    extmods = probe.salt(host, "config.get", "extension_modules")[host]
    path = f"{extmods}/modules/mariadb_replication.py"
    original = probe.sh(host, "cat", path).stdout
    assert "def serve_backup_stream" in original, path
    try:
        probe.sh(host, "tee", path, input=original + WEAK_STREAM)
        probe.salt(host, "saltutil.refresh_modules", "async=False")
        yield
    finally:
        probe.salt(host, "saltutil.sync_all")
    assert WEAK_MARKER not in probe.sh(host, "cat", path).stdout, f"{host}:{path} is still the weakened copy"


def test_the_peer_and_stream_checks_can_fail(lab):
    source = checks.Probe(lab).masterdb
    with weakened_master(lab), weakened_stream(lab, source):
        assert_every_check_fails(lab, [
            "peer_acl_is_exact", "master_accepts_no_key_unasked", "app_host_cannot_ask_for_a_stream",
            "app_host_cannot_publish_to_the_ca", "replica_cannot_divert_a_stream",
            "stream_settings_are_not_the_callers",
        ])  # fmt: skip
    hostile = {checks.HOSTILE_PORT, checks.HOSTILE_PORT + 1}
    assert not [sock for sock in checks.Probe(lab).listeners(source) if int(sock.rsplit(":", 1)[1]) in hostile]


# ---------------------------------------------------------------------------------------------------- the pillar

WEAK_TOP = """base:
  '*': [inventory]
  '{ca}': [security_weak_ca]
"""
WEAK_CA = """x509_signing_policies:
  security_weak_open:
    - signing_private_key: /etc/pki/rolestack/ca.key
    - signing_cert: /etc/pki/rolestack/ca.crt
    - days_valid: 1
"""


@contextlib.contextmanager
def weakened_pillar(handle):
    """
    The inventory as a pillar SLS of every minion, a signing policy open to anyone on the CA: one commit; and the
    master's pre-receive hook disabled (an invalid inventory reaches the master), put back by salt.srv.
    """
    probe = checks.Probe(handle)
    repo, ca = handle.lab.pillar_repo, probe.salt_host
    rolestack_lab.pull_pillar(handle.lab)
    before = probe.git("rev-parse", "HEAD").strip()
    hook_disabled(handle)
    (repo / "inventory.sls").symlink_to("inventory.yaml")
    probe.git("add", "inventory.sls")
    probe.commit({"top.sls": WEAK_TOP.format(ca=ca), "security_weak_ca.sls": WEAK_CA}, "security: weakened")
    weak = probe.git("rev-parse", "HEAD").strip()
    try:
        probe.salt(ca, "saltutil.refresh_pillar", "wait=True")
        yield
    finally:
        probe.git("revert", "--no-edit", weak)
        probe.salt(ca, "saltutil.refresh_pillar", "wait=True")
        hook_restored(handle)
    assert probe.git("diff", before, "HEAD") == "" and probe.git("status", "--porcelain") == ""


PRE_RECEIVE = "/srv/git/pillar.git/hooks/pre-receive"


def hook_disabled(handle):
    """The master's pillar pre-receive hook not executable: git runs no validation."""
    handle.sh(handle.lab.salt_host, "chmod", "a-x", PRE_RECEIVE)


def hook_restored(handle):
    """salt.srv on the salt host puts the hook back (file.managed, mode 0755); checked."""
    ret = handle.salt(handle.lab.salt_host, "state.apply", "salt.srv")[handle.lab.salt_host]
    assert all(state["result"] for state in ret.values()), ret
    assert handle.sh(handle.lab.salt_host, "test", "-x", PRE_RECEIVE, check=False).returncode == 0


@contextlib.contextmanager
def validation_disabled(handle):
    hook_disabled(handle)
    try:
        yield
    finally:
        hook_restored(handle)


def test_the_invalid_push_check_can_fail(lab):
    with validation_disabled(lab):
        ok, detail = checks.run_check("invalid_pillar_push_is_refused", lab)
        assert not ok and "was accepted" in detail, detail
    assert checks.run_check("invalid_pillar_push_is_refused", lab)[0]


def test_the_secret_and_ca_checks_can_fail(lab):
    with weakened_pillar(lab):
        assert_every_check_fails(lab, [
            "secrets_only_where_used", "other_ids_get_the_common_pillar", "secret_errors_hide_values",
            "ca_signs_only_a_hosts_own_names",
        ])  # fmt: skip


# ---------------------------------------------------------------------------------------------------- the hosts


@contextlib.contextmanager
def planted_token(handle, readable_on, also_on):
    """An accepted enrollment token (added to the master's autosign grains) left 0644 on one host, 0600 on another."""
    probe = checks.Probe(handle)
    # the lab enrols by fingerprint: the master's configuration names no autosign_grains_dir (salt's default then)
    grains_dir = Path(
        probe.master_config().get("autosign_grains_dir") or probe.lab.salt_host_path("/etc/salt/autosign_grains")
    )
    made = not grains_dir.exists()
    grains_dir.mkdir(exist_ok=True)
    files = sorted(grains_dir.iterdir())
    accepted = files[0] if files else grains_dir / "rolestack_enroll"
    original = accepted.read_text() if accepted.exists() else None
    token = secrets.token_hex(16)
    planted = "/etc/salt/security-planted-token"
    try:
        accepted.write_text((original or "") + token + "\n")
        for host, mode in ((readable_on, "0644"), (also_on, "0600")):
            probe.sh(host, "sh", "-c", f"umask 077; echo {token} > {planted}; chmod {mode} {planted}")
        yield
    finally:
        for host in (readable_on, also_on):
            probe.sh(host, "rm", "-f", planted)
        if original is None:
            accepted.unlink(missing_ok=True)
        else:
            accepted.write_text(original)
        if made:
            grains_dir.rmdir()


WEAK_ADMIT_MARKER = "# security battery: a deliberately weakened admit"
WEAK_ADMIT = f"""

{WEAK_ADMIT_MARKER}: any pending key, any fingerprint or none
def admit(minion_id, fingerprint=None, timeout=60, **kwargs):
    with salt.key.get_key(__opts__) as skey:
        skey.accept(match=minion_id, include_rejected=True, include_denied=True)
    return minion_id
"""


@contextlib.contextmanager
def weakened_admit(handle):
    """
    The master's minion_key runner with an admit that trusts any pending key: the served tree's copy (the master's
    runner_dirs, bootstrap.master; salt-run loads it each time), written back afterwards.
    """
    path = handle.lab.salt_host_path("/srv/salt/current/_runners/minion_key.py")
    original = path.read_text()
    try:
        path.write_text(original + WEAK_ADMIT)
        yield
    finally:
        path.write_text(original)
    assert WEAK_ADMIT_MARKER not in path.read_text(), f"{path} is still the weakened copy"


@contextlib.contextmanager
def second_writable(handle, host):
    probe = checks.Probe(handle)
    probe.sql(host, "SET GLOBAL read_only = 0")
    try:
        yield
    finally:
        probe.sql(host, "SET GLOBAL read_only = 1")
    assert probe.sql(host, "SELECT @@global.read_only") == "1"


@contextlib.contextmanager
def stale_replication_account(handle, address="10.10.10.250"):
    probe = checks.Probe(handle)
    account = f"'repl'@'{address}'"
    # not binlogged: only masterdb gets (and loses) it
    probe.sql(probe.masterdb, f"SET sql_log_bin = 0; CREATE USER {account} IDENTIFIED BY '{secrets.token_hex(12)}'")
    try:
        yield
    finally:
        probe.sql(probe.masterdb, f"SET sql_log_bin = 0; DROP USER IF EXISTS {account}")


def test_the_key_token_and_db_checks_can_fail(lab):
    probe = checks.Probe(lab)
    with weakened_admit(lab):
        assert_every_check_fails(lab, ["keys_are_admitted_by_sha256_fingerprint"])
    with planted_token(lab, probe.app_host, probe.replica):
        ok, detail = checks.run_check("enrollment_tokens_are_private", lab)
        assert not ok and "security-planted-token (0644)" in detail and "one token on 2 hosts" in detail, detail
    with second_writable(lab, probe.replica):
        assert_every_check_fails(lab, ["one_writable_db_host"])
    with stale_replication_account(lab):
        assert_every_check_fails(lab, ["replication_accounts_only_for_db_hosts"])


@contextlib.contextmanager
def redis_without_password(lab, host):
    """``host``'s redis answering anyone (CONFIG SET requirepass ""), then its password set back."""
    password = checks.Probe(lab).inventory["secrets"]["sessions_redis_password"]
    lab.sh(host, "redis-cli", "-a", password, "--no-auth-warning", "CONFIG", "SET", "requirepass", "")
    try:
        yield
    finally:
        lab.sh(host, "redis-cli", "CONFIG", "SET", "requirepass", password)
    assert "NOAUTH" in lab.sh(host, "redis-cli", "PING", check=False).stdout


@contextlib.contextmanager
def firewall_removed(lab, host):
    """``host``'s table inet rolestack deleted, then put back by the host's highstate (the firewall state)."""
    lab.sh(host, "nft", "delete", "table", "inet", "rolestack")
    try:
        yield
    finally:
        result = lab.highstate(host)
    assert result["clean"], result["rows"]
    assert "table inet rolestack" in lab.sh(host, "nft", "list", "tables").stdout


def test_the_key_value_checks_can_fail(lab):
    with redis_without_password(lab, "sessions1"):
        ok, detail = checks.run_check("redis_refuses_unauthenticated", lab)
        assert not ok and "sessions1:6379 answered" in detail, detail
    with firewall_removed(lab, "sessions1"):
        ok, detail = checks.run_check("key_value_ports_only_for_web_hosts", lab)
        assert not ok and "sessions1:11211 answered" in detail and "sessions1:6379 answered" in detail, detail
    assert checks.run_check("key_value_ports_only_for_web_hosts", lab)[0]


@contextlib.contextmanager
def hosts_allow_opened(lab, host, *paths):
    """rsync daemons' ``paths`` on ``host`` letting the whole lab network in, then put back by the host's highstate."""
    for path in paths:
        lab.sh(host, "sed", "-i", "s|^\\(\\s*hosts allow = \\).*|\\110.10.10.0/24|", path)
        assert "hosts allow = 10.10.10.0/24" in lab.read(host, path)
    try:
        yield
    finally:
        result = lab.highstate(host)
    assert result["clean"], result["rows"]
    assert all("hosts allow = 10.10.10.0/24" not in lab.read(host, path) for path in paths)


def test_the_rsync_checks_can_fail(lab):
    # the salt host's module source and its backup daemon (no firewall on the salt host: the daemons guard)
    with hosts_allow_opened(lab, "salt", "/etc/rsyncd.conf", "/etc/rsyncd-backup.conf"):
        ok, detail = checks.run_check("rsync_refuses_hosts_not_allowed_and_wrong_secrets", lab)
        assert not ok and "files served" in detail, detail
        ok, detail = checks.run_check("backup_sources_serve_only_the_backup_host", lab)
        assert not ok and "salt's backup module served" in detail, detail


@pytest.fixture(autouse=True)
def _no_leftovers(lab):
    """Whatever a test weakened, the lab is back: no weakened master file, a clean pillar repository."""
    yield
    assert not (lab.lab.master_dir / "master.d" / WEAK_MASTER_CONF).exists()
    assert checks.Probe(lab).git("status", "--porcelain") == ""


@contextlib.contextmanager
def nfs_share_open(lab, host):
    """
    ``host``'s ganesha exporting to every address with root not squashed (reloaded by SIGHUP: a restart would start a
    grace period refusing new files), its firewall gone; then its highstate puts back both.
    """
    edits = [
        "-e",
        "s/Access_Type = None;/Access_Type = RW;/",
        "-e",
        "s/Squash = root_squash;/Squash = no_root_squash;/",
    ]
    lab.sh(host, "sed", "-i", *edits, "/etc/ganesha/ganesha.conf")
    lab.sh(host, "systemctl", "kill", "--signal=HUP", "nfs-ganesha")
    with firewall_removed(lab, host):
        yield
    assert "no_root_squash" not in lab.read(host, "/etc/ganesha/ganesha.conf")


def test_the_nfs_check_can_fail(lab):
    with nfs_share_open(lab, "backup"):
        ok, detail = checks.run_check("nfs_share_only_for_elastic_hosts", lab)
        assert not ok and "NFS share listed from" in detail and "belongs to 0:0" in detail, detail
