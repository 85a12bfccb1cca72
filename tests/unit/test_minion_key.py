"""
The minion_key runner's logic: fingerprints as the minion prints them, what admit decides from the keys
the master holds, and the runner functions over a small in-memory key store (the real one is exercised
in tests/integration/test_minion_key_replace.py).
"""

import importlib.util

import pytest
import salt.utils.crypt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

from tests.support.paths import REPO


def _load_runner():
    spec = importlib.util.spec_from_file_location("minion_key", REPO / "_runners" / "minion_key.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mk = _load_runner()


def _pub():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


OLD, NEW, OTHER = _pub(), _pub(), _pub()


def fp(pub, hash_type="sha256"):
    return mk._key_fingerprint(pub, hash_type)


def digest(pub, hash_type="sha256"):
    return fp(pub, hash_type).replace(":", "")


# ---- fingerprints --------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_type", ["sha256", "md5", "sha512"])
def test_fingerprint_is_what_key_finger_prints(tmp_path, hash_type):
    """salt-call --local key.finger: pem_finger on the minion.pub file."""
    for text in (NEW, NEW.replace("\n", "\r\n"), NEW + "\n\n"):
        path = tmp_path / "minion.pub"
        path.write_bytes(text.encode())
        assert fp(text, hash_type) == salt.utils.crypt.pem_finger(str(path), sum_type=hash_type)


@pytest.mark.parametrize(
    "typed",
    [
        lambda f: f,
        lambda f: f.upper(),
        lambda f: f.replace(":", ""),
        lambda f: f"  {f}\n",
        lambda f: f.replace(":", " "),
    ],
)
def test_normalize_fingerprint_forms(typed):
    assert mk._normalize_fingerprint(typed(fp(NEW))) == digest(NEW)


# a whole sha256 fingerprint whose last digit is not hex: built without relying on which digits the random key
# happens to have (a replace("a", "g") changed nothing for about one key in 60)
NOT_HEX = fp(NEW)[:-1] + "g"


@pytest.mark.parametrize(
    "bad",
    ["", "not-a-fingerprint", "ab:cd", fp(NEW)[:-3], fp(NEW) + ":ff", NOT_HEX, 1234, ["ab"]],
)
def test_normalize_fingerprint_refuses(bad):
    with pytest.raises(SaltInvocationError, match="fingerprint"):
        mk._normalize_fingerprint(bad)


def test_normalize_none():
    assert mk._normalize_fingerprint(None) is None


@pytest.mark.parametrize("hash_type", ["md5", "sha1", "sha224", "sha384", "sha512"])
def test_only_sha256_fingerprints_are_accepted(hash_type):
    """A minion with another hash_type prints another fingerprint: refused, saying how to read the sha256 one."""
    with pytest.raises(SaltInvocationError) as err:
        mk._normalize_fingerprint(fp(NEW, hash_type))
    message = str(err.value)
    assert f"got an {hash_type} fingerprint" in message and "only sha256" in message
    assert "salt-call --local key.finger hash_type=sha256" in message


def test_matches_by_sha256():
    assert mk._matches(NEW, digest(NEW))
    assert not mk._matches(OLD, digest(NEW))


def test_summarize_and_describe():
    keys = [("accepted", OLD), ("denied", NEW), ("denied", OTHER)]
    assert mk._summarize(keys) == {
        "accepted": [fp(OLD)],
        "pending": [],
        "rejected": [],
        "denied": [fp(NEW), fp(OTHER)],
    }
    assert mk._describe(keys) == f"accepted {fp(OLD)}; denied {fp(NEW)}, {fp(OTHER)}"
    assert mk._describe([]) == "no key"


# ---- what admit decides --------------------------------------------------------------------------


def decide(keys, wanted=None, old_accepted=None):
    return mk._decide("web9", keys, mk._normalize_fingerprint(wanted), old_accepted)


def test_nothing_held_waits():
    action, _, _, message = decide([], fp(NEW))
    assert action == "wait" and "no key" in message


@pytest.mark.parametrize("wanted", [None, fp(NEW)])
def test_pending_key_accepted_without_or_with_its_fingerprint(wanted):
    assert decide([("pending", NEW)], wanted)[:3] == ("accept", "pending", NEW)


def test_pending_key_with_another_fingerprint_refused():
    action, state, _, message = decide([("pending", OTHER)], fp(NEW))
    assert (action, state) == ("refuse", "pending")
    assert "nothing accepted" in message and fp(OTHER) in message and fp(NEW) in message


def test_pending_impostor_and_denied_right_key_refused_with_the_reason():
    action, _, _, message = decide([("pending", OTHER), ("denied", NEW)], fp(NEW))
    assert action == "refuse" and "a denied key has it" in message


def test_old_accepted_key_and_new_denied_key_refused_pointing_at_replace():
    action, state, pub, message = decide([("accepted", OLD), ("denied", NEW)], fp(NEW), old_accepted=OLD)
    assert (action, state, pub) == ("refuse", "accepted", OLD)
    assert "the new one is denied" in message and f"minion_key.replace web9 fingerprint={fp(NEW)}" in message


def test_key_autosigned_while_waiting_with_another_fingerprint_rejected():
    action, state, pub, message = decide([("accepted", OTHER)], fp(NEW), old_accepted=None)
    assert (action, state, pub) == ("reject", "accepted", OTHER)
    assert "now rejected" in message


def test_key_autosigned_after_old_one_with_another_fingerprint_rejected():
    action, _, pub, _ = decide([("accepted", OTHER)], fp(NEW), old_accepted=OLD)
    assert (action, pub) == ("reject", OTHER)


@pytest.mark.parametrize("old", [None, NEW])
def test_accepted_key_with_the_fingerprint_done(old):
    assert decide([("accepted", NEW)], fp(NEW), old_accepted=old)[:3] == ("done", "accepted", NEW)
    assert decide([("accepted", NEW), ("denied", OTHER)], fp(NEW), old_accepted=old)[0] == "done"


def test_accepted_key_without_fingerprint_done_unless_another_key_is_denied():
    assert decide([("accepted", OLD)])[0] == "done"
    action, _, _, message = decide([("accepted", OLD), ("denied", NEW)])
    assert action == "refuse" and "minion_key.replace web9" in message


def test_denied_key_accepted_only_on_its_fingerprint():
    assert decide([("denied", OTHER), ("denied", NEW)], fp(NEW))[:3] == ("accept", "denied", NEW)
    action, _, _, message = decide([("denied", NEW)])
    assert action == "wait" and "fingerprint=" in message
    action, _, _, message = decide([("denied", OTHER)], fp(NEW))
    assert action == "wait" and "none with fingerprint" in message


def test_rejected_key_accepted_only_on_its_fingerprint():
    assert decide([("rejected", NEW)], fp(NEW))[:3] == ("accept", "rejected", NEW)
    for wanted in (None, fp(OTHER)):
        action, _, _, message = decide([("rejected", NEW)], wanted)
        assert action == "refuse" and "rejected" in message


# ---- the runner functions over an in-memory key store --------------------------------------------


class FakeCache:
    """The keys / denied_keys banks: one accepted/pending/rejected entry per id, a list of denied."""

    def __init__(self):
        self.keys = {}
        self.denied = {}

    def fetch(self, bank, key):
        if bank == "keys":
            entry = self.keys.get(key)
            return dict(entry) if entry else None
        return list(self.denied[key]) if key in self.denied else None

    def store(self, bank, key, data):
        if bank == "keys":
            self.keys[key] = dict(data)
        else:
            self.denied[key] = list(data)

    def flush(self, bank, key):
        (self.keys if bank == "keys" else self.denied).pop(key, None)


class FakeKey:
    """The part of salt.key.Key the runner uses, over FakeCache."""

    def __init__(self, cache):
        self.cache = cache
        self.calls = []
        self.state = {"minions": "accepted", "minions_pre": "pending", "minions_rejected": "rejected"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass

    def _move(self, match_dict, to_state, states):
        for keydir, ids in match_dict.items():
            for minion_id in ids:
                entry = self.cache.keys.get(minion_id)
                if entry and entry["state"] in states and self.state.get(keydir) == entry["state"]:
                    entry["state"] = to_state

    def accept(self, match_dict, include_rejected=False, include_denied=False):
        self.calls.append(("accept", match_dict))
        self._move(match_dict, "accepted", {"pending"} | ({"rejected"} if include_rejected else set()))

    def reject(self, match_dict, include_accepted=False, include_denied=False):
        self.calls.append(("reject", match_dict))
        self._move(match_dict, "rejected", {"pending"} | ({"accepted"} if include_accepted else set()))

    def delete_key(self, match_dict):
        self.calls.append(("delete", match_dict))
        for keydir, ids in match_dict.items():
            for minion_id in ids:
                self.cache.flush("denied_keys" if keydir == "minions_denied" else "keys", minion_id)


class FakeDataCache:
    def __init__(self, entries):
        self.entries = set(entries)  # (bank, key); key None for a whole bank

    def contains(self, bank, key=None):
        return (bank, key) in self.entries

    def list(self, bank):
        return [key for bank_, key in self.entries if bank_ == bank and key]

    def flush(self, bank, key=None):
        self.entries.discard((bank, key))


ZONE = "production.wpdn"
INVENTORY_HOSTS = ("web9", "app1")


def fake_rolestack_pillar(minion_id):
    """What the master's ext_pillar derives: an inventory host gets its host entry, any other id the common part."""
    host = {"name": minion_id, "fqdn": f"{minion_id}.{ZONE}"} if minion_id in INVENTORY_HOSTS else None
    return {"platform": {"zone": ZONE}, "host": host}


@pytest.fixture
def store(monkeypatch, tmp_path):
    cache = FakeCache()
    data = FakeDataCache({("grains", "web9"), ("mine", "web9"), ("pillar", "web9:base"), ("grains", "app1")})
    fake = FakeKey(cache)
    monkeypatch.setattr(
        mk, "__opts__", {"__role": "master", "pki_dir": str(tmp_path), "hash_type": "sha256"}, raising=False
    )
    monkeypatch.setattr(mk.salt.key, "get_key", lambda opts: fake)
    monkeypatch.setattr(mk.salt.cache, "factory", lambda opts, **kwargs: data)
    monkeypatch.setattr(mk, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(mk, "_rolestack_pillar", fake_rolestack_pillar, raising=False)
    fake.data = data
    return fake


def test_virtual_needs_a_master_with_the_cache_key_store(monkeypatch):
    monkeypatch.setattr(mk, "__opts__", {"__role": "minion"}, raising=False)
    assert mk.__virtual__()[0] is False
    monkeypatch.setattr(mk, "__opts__", {"__role": "master"}, raising=False)
    assert "3008" in mk.__virtual__()[1]
    monkeypatch.setattr(mk, "__opts__", {"__role": "master", "keys.cache_driver": "localfs_key"}, raising=False)
    assert mk.__virtual__() == "minion_key"


@pytest.mark.parametrize("bad", ["web*", "web9,web8", "web[0-9]", "../web9", "", None])
def test_one_exact_id(store, bad):
    with pytest.raises(SaltInvocationError):
        mk.status(bad)


@pytest.mark.parametrize("timeout", [-1, "soon", True])
def test_timeout_checked(store, timeout):
    with pytest.raises(SaltInvocationError, match="timeout"):
        mk.admit("web9", fp(NEW), timeout=timeout)


def test_status_shape(store):
    store.cache.keys["web9"] = {"state": "accepted", "pub": OLD}
    store.cache.denied["web9"] = [NEW]
    assert mk.status("web9") == {
        "id": "web9",
        "hash_type": "sha256",
        "accepted": [fp(OLD)],
        "pending": [],
        "rejected": [],
        "denied": [fp(NEW)],
    }
    assert mk.status("nobody")["accepted"] == []


def test_retire_removes_every_key_and_the_cached_data(store):
    store.cache.keys["web9"] = {"state": "accepted", "pub": OLD}
    store.cache.denied["web9"] = [NEW]
    assert mk.retire("web9") == {
        "keys": {"accepted": [fp(OLD)], "denied": [fp(NEW)]},
        "cache": ["grains", "mine", "pillar web9:base"],
    }
    assert store.cache.fetch("keys", "web9") is None and store.cache.fetch("denied_keys", "web9") is None
    assert store.data.entries == {("grains", "app1")}
    with pytest.raises(CommandExecutionError, match="unknown minion id"):
        mk.retire("web9")


def test_replace_keeps_the_denied_key_with_the_fingerprint_and_accepts_it(store):
    store.cache.keys["web9"] = {"state": "accepted", "pub": OLD}
    store.cache.denied["web9"] = [NEW]
    ret = mk.replace("web9", fingerprint=fp(NEW), timeout=0)
    assert ret == {
        "id": "web9",
        "retired": {
            "keys": {"accepted": [fp(OLD)]},
            "cache": ["grains", "mine", "pillar web9:base"],
            "kept": {"denied": fp(NEW)},
        },
        "accepted": fp(NEW),
    }
    assert store.cache.fetch("keys", "web9") == {"state": "accepted", "pub": NEW}
    assert store.cache.fetch("denied_keys", "web9") is None


def test_replace_again_after_success_keeps_the_accepted_key_and_its_data(store):
    store.cache.keys["web9"] = {"state": "accepted", "pub": NEW}
    ret = mk.replace("web9", fingerprint=fp(NEW), timeout=0)
    assert ret["accepted"] == fp(NEW) and ret["retired"] == {"keys": {}, "cache": [], "kept": {"accepted": fp(NEW)}}
    assert ("grains", "web9") in store.data.entries
    assert not [call for call in store.calls if call[0] == "delete"]


def test_replace_with_a_wrong_fingerprint_accepts_nothing(store):
    store.cache.keys["web9"] = {"state": "accepted", "pub": OLD}
    store.cache.denied["web9"] = [NEW]
    with pytest.raises(CommandExecutionError, match="already retired") as err:
        mk.replace("web9", fingerprint=fp(OTHER), timeout=0)
    assert "no key with fingerprint" in str(err.value)
    assert store.cache.fetch("keys", "web9") is None
    assert not [call for call in store.calls if call[0] == "accept"]


def test_admit_times_out_saying_what_it_saw(store):
    store.cache.denied["web9"] = [OTHER]
    with pytest.raises(CommandExecutionError) as err:
        mk.admit("web9", fingerprint=fp(NEW), timeout=0.05)
    message = str(err.value)
    assert "after 0.05s" in message and fp(OTHER) in message and "restart" in message


def test_admit_accepts_a_pending_key_that_shows_up(store, monkeypatch):
    fetches = []
    real_fetch = store.cache.fetch

    def fetch(bank, key):
        fetches.append(bank)
        if len(fetches) == 6:  # the VM asks while admit waits
            store.cache.keys["web9"] = {"state": "pending", "pub": NEW}
        return real_fetch(bank, key)

    monkeypatch.setattr(store.cache, "fetch", fetch)
    assert mk.admit("web9", fingerprint=fp(NEW), timeout=5) == fp(NEW)
    assert store.cache.keys["web9"] == {"state": "accepted", "pub": NEW}


def test_admit_rejects_a_key_autosigned_while_waiting_with_another_fingerprint(store, monkeypatch):
    fetches = []
    real_fetch = store.cache.fetch

    def fetch(bank, key):
        fetches.append(bank)
        if len(fetches) == 4:  # autosign accepts some other machine's key
            store.cache.keys["web9"] = {"state": "accepted", "pub": OTHER}
        return real_fetch(bank, key)

    monkeypatch.setattr(store.cache, "fetch", fetch)
    with pytest.raises(CommandExecutionError, match="now rejected"):
        mk.admit("web9", fingerprint=fp(NEW), timeout=5)
    assert store.cache.keys["web9"] == {"state": "rejected", "pub": OTHER}


def test_admit_leaves_an_accepted_key_it_found_alone(store):
    store.cache.keys["web9"] = {"state": "accepted", "pub": OLD}
    with pytest.raises(CommandExecutionError, match="Nothing changed"):
        mk.admit("web9", fingerprint=fp(NEW), timeout=0)
    assert store.cache.keys["web9"] == {"state": "accepted", "pub": OLD}
    assert store.calls == []


def test_admit_accepts_the_denied_key_with_the_fingerprint(store):
    store.cache.denied["web9"] = [NEW]
    assert mk.admit("web9", fp(NEW), timeout=0) == fp(NEW)
    assert store.cache.keys["web9"] == {"state": "accepted", "pub": NEW}
    assert store.cache.fetch("denied_keys", "web9") is None


# ---- no fingerprint: refused unless the operator says so ------------------------------------------------------


@pytest.mark.parametrize("function", ["admit", "replace"])
def test_no_fingerprint_is_refused_and_changes_nothing(store, function):
    store.cache.keys["web9"] = {"state": "pending", "pub": NEW}
    with pytest.raises(SaltInvocationError) as err:
        getattr(mk, function)("web9", timeout=0)
    message = str(err.value)
    assert "whichever machine asks first" in message
    assert "salt-call --local key.finger hash_type=sha256" in message
    assert f"salt-run minion_key.{function} web9 <sha256 fingerprint>" in message
    assert f"salt-run minion_key.{function} web9 trust_first_key=True" in message
    assert store.cache.keys["web9"] == {"state": "pending", "pub": NEW} and store.calls == []


@pytest.mark.parametrize("trust", ["yes", 1, "True"])
def test_trust_first_key_must_be_said_exactly(store, trust):
    store.cache.keys["web9"] = {"state": "pending", "pub": NEW}
    with pytest.raises(SaltInvocationError, match="no fingerprint given"):
        mk.admit("web9", timeout=0, trust_first_key=trust)


def test_trust_first_key_accepts_the_pending_key(store):
    store.cache.keys["web9"] = {"state": "pending", "pub": NEW}
    assert mk.admit("web9", timeout=0, trust_first_key=True) == fp(NEW)
    assert store.cache.keys["web9"] == {"state": "accepted", "pub": NEW}


@pytest.mark.parametrize("function", ["admit", "replace"])
def test_an_md5_fingerprint_is_refused_by_the_runner(store, function):
    store.cache.denied["web9"] = [NEW]
    with pytest.raises(SaltInvocationError, match="hash_type=sha256"):
        getattr(mk, function)("web9", fp(NEW, "md5"), timeout=0)
    assert store.calls == []


# ---- every id that could stand for the host --------------------------------------------------------------------


def test_retire_also_retires_the_fqdn_form_of_an_inventory_host(store):
    """A stale key under web9.<zone> (enrolled once, or by someone else) goes with web9's."""
    store.cache.keys["web9"] = {"state": "accepted", "pub": OLD}
    store.cache.keys[f"web9.{ZONE}"] = {"state": "accepted", "pub": OTHER}
    store.data.entries.add(("grains", f"web9.{ZONE}"))
    ret = mk.retire("web9")
    assert ret["keys"] == {"accepted": [fp(OLD)]}
    assert ret["other_ids"] == {f"web9.{ZONE}": {"keys": {"accepted": [fp(OTHER)]}, "cache": ["grains"]}}
    assert store.cache.fetch("keys", f"web9.{ZONE}") is None
    assert ("grains", f"web9.{ZONE}") not in store.data.entries


def test_retire_given_the_fqdn_also_retires_the_short_id(store):
    store.cache.keys[f"web9.{ZONE}"] = {"state": "pending", "pub": OTHER}
    store.cache.keys["web9"] = {"state": "accepted", "pub": OLD}
    ret = mk.retire(f"web9.{ZONE}")
    assert ret["keys"] == {"pending": [fp(OTHER)]}
    assert ret["other_ids"]["web9"]["keys"] == {"accepted": [fp(OLD)]}
    assert store.cache.fetch("keys", "web9") is None


def test_retire_of_a_short_id_that_holds_nothing_but_its_fqdn_form_does(store):
    store.data.entries.clear()
    store.cache.denied[f"web9.{ZONE}"] = [OTHER]
    ret = mk.retire("web9")
    assert ret["keys"] == {} and ret["other_ids"] == {f"web9.{ZONE}": {"keys": {"denied": [fp(OTHER)]}, "cache": []}}


def test_retire_leaves_other_hosts_and_non_inventory_ids_alone(store):
    """Only the FQDN form of an inventory host: a non-inventory id's would-be FQDN is not touched."""
    store.cache.keys["web8"] = {"state": "accepted", "pub": OLD}
    store.cache.keys[f"web8.{ZONE}"] = {"state": "accepted", "pub": OTHER}
    store.cache.keys[f"web9.{ZONE}"] = {"state": "accepted", "pub": NEW}
    assert "other_ids" not in mk.retire("web8")
    assert store.cache.fetch("keys", f"web8.{ZONE}")["state"] == "accepted"
    assert store.cache.fetch("keys", f"web9.{ZONE}")["state"] == "accepted"


def test_replace_retires_the_other_forms_too(store):
    store.cache.keys["web9"] = {"state": "accepted", "pub": OLD}
    store.cache.denied["web9"] = [NEW]
    store.cache.keys[f"web9.{ZONE}"] = {"state": "accepted", "pub": OTHER}
    ret = mk.replace("web9", fp(NEW), timeout=0)
    assert ret["accepted"] == fp(NEW)
    assert ret["retired"]["other_ids"][f"web9.{ZONE}"]["keys"] == {"accepted": [fp(OTHER)]}
    assert store.cache.fetch("keys", f"web9.{ZONE}") is None
