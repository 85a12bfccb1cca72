"""
A replaced VM: a new key under an old minion id is denied while the old key is accepted; the minion_key
runner retires the old key (and a stale one under the host's other id form) and admits the new one only on its
sha256 fingerprint (salt-call --local key.finger hash_type=sha256); without one it refuses unless told
trust_first_key=True. Then the same on a master that autosigns by grains (autosign_grains_dir).
"""

import pathlib
import shutil
import threading
import time

import pytest
from rolestack_highstate import poll

from tests.support.paths import LOADER_DIRS

ZONE = "production.wpdn"  # pillar.example's zone (the master's rolestack ext_pillar)
WRONG = ":".join(["ab"] * 32)  # a well-formed sha256 fingerprint no key has
AUTOSIGN_GRAIN = "rolestack_token"


@pytest.fixture(scope="module")
def web9(salt_master):
    """A minion the harness accepts on its first start (salt-factories accepts pending keys)."""
    minion = salt_master.salt_minion_daemon("web9", overrides={"master": "127.0.0.1"})
    with minion.started():
        yield minion
    minion.terminate()
    salt_master.salt_key_cli().run("-d", "web9", "-y")


@pytest.fixture
def no_harness_accept(salt_master):
    """Stop salt-factories from accepting every pending key: a master without autosign."""
    listener = salt_master.event_listener
    handler = listener.auth_event_handlers.get(salt_master.id)
    listener.unregister_auth_event_handler(salt_master.id)
    yield
    if handler is not None:
        listener.register_auth_event_handler(salt_master.id, handler)


@pytest.fixture(scope="module")
def autosign_master(salt_factories, pillar_tree):
    """A master that autosigns minions presenting the grain rolestack_token=vm-token, and nothing else."""
    config = {
        "interface": "127.0.0.1",
        "autosign_grains_dir": "autosign_grains",  # salt puts it under the master's root_dir
        # the rolestack ext_pillar: minion_key.retire reads the platform's zone from it
        "pillar_roots": {"base": [str(pillar_tree)]},
        "ext_pillar": [{"rolestack": {"inventory": "inventory.yaml"}}],
        **LOADER_DIRS,
    }
    master = salt_factories.salt_master_daemon("autosign", overrides=config)
    grains_dir = pathlib.Path(master.config["autosign_grains_dir"])
    grains_dir.mkdir(parents=True, exist_ok=True)
    (grains_dir / AUTOSIGN_GRAIN).write_text("vm-token\n")
    with master.started():
        # only autosign may accept keys here
        master.event_listener.unregister_auth_event_handler(master.id)
        yield master


def runner(master, function, *args):
    return master.salt_run_cli(timeout=120).run(f"minion_key.{function}", *args)


def ok(master, function, *args):
    ret = runner(master, function, *args)
    assert ret.returncode == 0, ret
    # salt-factories hands a bare JSON string (admit's fingerprint) back as stdout, not as data
    return ret.data if ret.data is not None else str(ret.stdout).strip()


def refused(master, function, *args):
    ret = runner(master, function, *args)
    assert ret.returncode != 0, ret
    return str(ret.stdout) + str(ret.stderr)


def invalid(master, function, *args):
    """Argument errors (SaltInvocationError): salt-run prints them with the usage, and exits 0."""
    ret = runner(master, function, *args)
    assert "Passed invalid arguments" in str(ret.stdout), ret
    return str(ret.stdout)


def finger(minion):
    """What the operator reads on the VM (asked until its minion has a key, for up to 30 s)."""
    seen = []

    def has_key():
        ret = minion.salt_call_cli().run("--local", "key.finger")
        assert ret.returncode == 0, ret
        seen.append(ret.data)
        return bool(ret.data)

    poll(has_key, 30)
    return seen[-1]


def pings(master, minion_id, timeout=5):
    ret = master.salt_cli(timeout=timeout + 30).run("test.ping", f"--timeout={timeout}", minion_tgt=minion_id)
    return ret.returncode == 0 and ret.data is True


def wait_status(master, minion_id, state, fingerprint, timeout=30):
    """The id's minion_key.status once ``state`` lists exactly ``fingerprint``, or as it is after ``timeout``."""
    seen = []

    def listed():
        seen.append(ok(master, "status", minion_id))
        return seen[-1][state] == [fingerprint]

    poll(listed, timeout)
    return seen[-1]


def boot_new_vm(minion, monkeypatch):
    """The replacement VM: same id, a new key (its pki dir is gone); started without waiting for the
    master to answer (it will not while its key is not accepted)."""
    minion.terminate()
    shutil.rmtree(minion.config["pki_dir"])
    with monkeypatch.context() as patch:
        patch.setattr(minion, "run_start_checks", lambda *_: True)
        minion.start()


def test_runner_is_synced(salt_master):
    ret = salt_master.salt_run_cli().run("doc.runner")
    assert ret.returncode == 0 and isinstance(ret.data, dict), ret
    docs = {name: doc for name, doc in ret.data.items() if name.startswith("minion_key.")}
    assert set(docs) == {f"minion_key.{name}" for name in ("status", "retire", "admit", "replace")}, docs
    assert all("CLI Example" in doc for doc in docs.values()), docs


def test_replaced_vm_is_admitted_by_fingerprint(salt_master, web9, no_harness_accept, monkeypatch):
    old = finger(web9)
    assert pings(salt_master, "web9")
    assert ok(salt_master, "status", "web9") == {
        "id": "web9",
        "hash_type": "sha256",
        "accepted": [old],
        "pending": [],
        "rejected": [],
        "denied": [],
    }

    # the VM is replaced: new key, same id. The master keeps the old key and denies the new one.
    boot_new_vm(web9, monkeypatch)
    new = finger(web9)
    assert new and new != old
    status = wait_status(salt_master, "web9", "denied", new)
    assert status["accepted"] == [old] and status["denied"] == [new], status
    assert not pings(salt_master, "web9", timeout=2)

    # admit alone does not replace the old key, and a wrong fingerprint is refused: nothing changes
    out = refused(salt_master, "admit", "web9", f"fingerprint={WRONG}", "timeout=2")
    assert "minion_key.replace" in out, out
    out = invalid(salt_master, "replace", "web9", "fingerprint=not-a-fingerprint")
    assert "not a sha256 key fingerprint" in out, out
    # what the VM prints with hash_type md5 (or sha1) is refused, saying how to read the sha256 one
    md5 = web9.salt_call_cli().run("--local", "key.finger", "hash_type=md5").data
    out = invalid(salt_master, "replace", "web9", f"fingerprint={md5}")
    assert "got an md5 fingerprint" in out and "key.finger hash_type=sha256" in out, out
    # no fingerprint: "the first key that shows up" is refused unless the operator says so
    out = invalid(salt_master, "replace", "web9", "timeout=2")
    assert "no fingerprint given" in out and "trust_first_key=True" in out, out
    assert ok(salt_master, "status", "web9") == status

    # the documented command: the old key goes, the denied new key (the fingerprint vouches) is accepted
    ret = ok(salt_master, "replace", "web9", f"fingerprint={new}", "timeout=10")
    assert ret["accepted"] == new, ret
    assert ret["retired"]["keys"] == {"accepted": [old]}, ret
    assert ret["retired"]["kept"] == {"denied": new}, ret
    assert "grains" in ret["retired"]["cache"], ret
    status = ok(salt_master, "status", "web9")
    assert status["accepted"] == [new] and status["denied"] == [], status

    # a denied salt-minion exits (rejected_retry is False): the operator restarts it
    web9.terminate()
    web9.start()
    assert pings(salt_master, "web9")


def test_retired_before_boot_pending_key_checked(salt_master, web9, no_harness_accept, monkeypatch):
    """retire first, then the VM boots: its key waits in pending; a wrong fingerprint accepts nothing."""
    if not web9.is_running():
        web9.start()
    current = finger(web9)
    assert pings(salt_master, "web9")
    web9.terminate()
    retired = ok(salt_master, "retire", "web9")
    assert retired["keys"] == {"accepted": [current]}, retired
    assert ok(salt_master, "status", "web9")["accepted"] == []
    assert "unknown minion id" in refused(salt_master, "retire", "web9")

    boot_new_vm(web9, monkeypatch)
    new = finger(web9)
    status = wait_status(salt_master, "web9", "pending", new)
    assert status["pending"] == [new] and status["accepted"] == [], status

    out = refused(salt_master, "admit", "web9", f"fingerprint={WRONG}", "timeout=2")
    assert "nothing accepted" in out, out
    out = invalid(salt_master, "admit", "web9", "timeout=0")
    assert "whichever machine asks first" in out and "key.finger hash_type=sha256" in out, out
    assert ok(salt_master, "status", "web9") == status

    # colons and case do not matter; the pending minion keeps asking and gets in
    admitted_at = time.time()
    assert ok(salt_master, "admit", "web9", f"fingerprint={new.replace(':', '').upper()}") == new
    started = salt_master.event_listener.wait_for_events(
        [(salt_master.id, "salt/minion/web9/start")], timeout=30, after_time=admitted_at
    )
    assert started.found_all_events, started
    assert pings(salt_master, "web9")
    # already accepted: admit confirms it
    assert ok(salt_master, "admit", "web9", f"fingerprint={new}", "timeout=0") == new


def test_autosign_grains_after_retire(autosign_master, monkeypatch):
    """
    autosign_grains does not override an accepted key: the replacement's key is denied. Once the old key
    is retired, the next attempt is autosigned; replace checks that key and rejects it on a mismatch.
    """
    grains = {"autosign_grains": [AUTOSIGN_GRAIN], "grains": {AUTOSIGN_GRAIN: "vm-token"}}
    web8 = autosign_master.salt_minion_daemon("web8", overrides={"master": "127.0.0.1", **grains})
    with web8.started():  # autosigned: nothing else accepts keys on this master
        first = finger(web8)
        assert ok(autosign_master, "status", "web8")["accepted"] == [first]

    try:
        boot_new_vm(web8, monkeypatch)
        second = finger(web8)
        status = wait_status(autosign_master, "web8", "denied", second)
        assert status["accepted"] == [first] and status["denied"] == [second], status

        # retired: the replacement asks again (restarted after its denial) and is autosigned at once
        ok(autosign_master, "retire", "web8")
        web8.terminate()
        web8.start()
        assert ok(autosign_master, "admit", "web8", f"fingerprint={second}", "timeout=0") == second

        # another replacement, but the operator's fingerprint is not its key: autosign takes the key
        # while replace waits, and replace rejects it
        web8.terminate()
        shutil.rmtree(web8.config["pki_dir"])
        result = {}
        waiting = threading.Thread(
            target=lambda: result.update(out=refused(autosign_master, "replace", "web8", f"fingerprint={WRONG}"))
        )
        waiting.start()
        time.sleep(3)  # replace has retired the old key and waits
        with monkeypatch.context() as patch:
            patch.setattr(web8, "run_start_checks", lambda *_: True)
            web8.start()
        waiting.join(90)
        assert "now rejected" in result.get("out", ""), result
        third = finger(web8)
        status = ok(autosign_master, "status", "web8")
        assert status["rejected"] == [third] and status["accepted"] == [], status

        # the operator vouches for that key after all: replace accepts the rejected key
        ret = ok(autosign_master, "replace", "web8", f"fingerprint={third}", "timeout=0")
        assert ret["accepted"] == third and ret["retired"]["kept"] == {"rejected": third}, ret
    finally:
        web8.terminate()


def test_retire_also_retires_the_fqdn_form_of_an_inventory_host(salt_master):
    """app2 is an inventory host: a key accepted under app2.<zone> (its FQDN form) goes with app2's retirement."""
    fqdn = salt_master.salt_minion_daemon(f"app2.{ZONE}", overrides={"master": "127.0.0.1"})
    with fqdn.started():  # accepted by the harness, as an operator's salt-key -A would
        stale = finger(fqdn)
        assert ok(salt_master, "status", f"app2.{ZONE}")["accepted"] == [stale]
    retired = ok(salt_master, "retire", "app2")
    assert retired["keys"] == {}, retired
    assert retired["other_ids"][f"app2.{ZONE}"]["keys"] == {"accepted": [stale]}, retired
    assert ok(salt_master, "status", f"app2.{ZONE}")["accepted"] == []
