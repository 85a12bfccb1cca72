"""
The key of one minion id, for a replaced VM: see it, retire it, admit the new one by its fingerprint.

A VM rebuilt under an old minion id comes up with a new key. While the master still holds the old,
accepted key, salt's key store files the new key under *denied* and the master refuses the VM.
Deleting the old key lets the next authentication attempt land in *pending* (or be accepted at once
when the master autosigns it, e.g. with ``autosign_grains``).

``replace`` is the one-command flow: it drops every key of the id (and of the other ids that could stand
for the host: its FQDN form, or its short form) and the master's cached data for it (grains, pillar, mine),
keeps only a key whose fingerprint is the one read on the new VM with
``salt-call --local key.finger hash_type=sha256``, and accepts that key. A key is accepted by its fingerprint:
without one, admit and replace refuse, unless the operator says ``trust_first_key=True`` (the first key that
shows up is then trusted, whichever machine sent it).

Fingerprints are sha256 only, computed the way the minion computes its own (``key.finger``: a hash of the PEM
body, without the BEGIN/END lines); an md5 or sha1 fingerprint is refused (collisions can be made).
In salt 3008.3, ``salt-key -f`` hashes the whole PEM text, so its fingerprints differ from ``key.finger``
(saltstack/salt#69970): compare with ``minion_key.status``, not with ``salt-key -f``.
"""

import hashlib
import io
import logging
import re
import time

import salt.cache
import salt.key
import salt.pillar
import salt.utils.verify
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltCacheError
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "minion_key"

STATES = ("accepted", "pending", "rejected", "denied")
# salt-key's names of the key states (Key.ACC, Key.PEND, Key.REJ, Key.DEN)
KEY_DIRS = {
    "accepted": "minions",
    "pending": "minions_pre",
    "rejected": "minions_rejected",
    "denied": "minions_denied",
}
HASH_TYPE = "sha256"  # the only fingerprint accepted (and shown)
OTHER_HASHES_BY_LENGTH = {32: "md5", 40: "sha1", 56: "sha224", 96: "sha384", 128: "sha512"}
FINGER_COMMAND = "salt-call --local key.finger hash_type=sha256"
GLOB_CHARS = frozenset("*?[],")
POLL_SECONDS = 1.0
RESTART_HINT = (
    "a salt-minion whose key was denied or rejected exits (unless rejected_retry: True): "
    "restart it on the VM (systemctl restart salt-minion) so it asks again"
)
# banks of the master's minion data cache keyed by minion id (salt 3008 layout)
DATA_BANKS = ("grains", "pillar", "mine")


def __virtual__():
    if __opts__.get("__role") != "master":
        return (False, "minion_key: a master runner (salt-run minion_key.<function>)")
    if "keys.cache_driver" not in __opts__:
        return (False, "minion_key: needs the cache-based key store of salt 3008 or later (keys.cache_driver)")
    return __virtualname__


# ---- pure logic ---------------------------------------------------------------------------------


def _normalize_fingerprint(fingerprint):
    """
    The hex digest in a sha256 fingerprint as an operator pastes it (``AA:bb:..``, with or without colons
    or spaces); None stays None. Raises SaltInvocationError when it is not a whole sha256 fingerprint (an md5
    or sha1 one is refused, saying how to read the sha256 one).
    """
    if fingerprint is None:
        return None
    if not isinstance(fingerprint, str):
        # salt's CLI parses arguments as YAML: a numeric-looking value is no longer the text typed
        raise SaltInvocationError(
            f"fingerprint: expected the text {FINGER_COMMAND} prints, got a {type(fingerprint).__name__}; quote it"
        )
    digest = re.sub(r"[\s:]", "", fingerprint).lower()
    if re.fullmatch(r"[0-9a-f]+", digest) and len(digest) in OTHER_HASHES_BY_LENGTH:
        raise SaltInvocationError(
            f"fingerprint: got an {OTHER_HASHES_BY_LENGTH[len(digest)]} fingerprint ({len(digest)} hex digits); "
            f"only sha256 fingerprints (64 hex digits) are accepted: read it on the VM with: {FINGER_COMMAND}"
        )
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise SaltInvocationError(
            f"fingerprint: {fingerprint!r} is not a sha256 key fingerprint (64 hex digits, colons optional); "
            f"read it on the VM with: {FINGER_COMMAND}"
        )
    return digest


def _key_fingerprint(pub, hash_type=HASH_TYPE):
    """
    The fingerprint ``salt-call --local key.finger`` prints for this public key (PEM text): the hash of
    the PEM body without the BEGIN/END lines, as ``salt.utils.crypt.pem_finger(path=...)`` computes it.
    """
    if isinstance(pub, str):
        pub = pub.encode("utf-8")
    lines = [line for line in io.BytesIO(pub).readlines() if line.strip()][1:-1]
    body = b"".join(lines).replace(b"\r\n", b"\n")
    digest = hashlib.new(hash_type, body).hexdigest()
    return ":".join(digest[index : index + 2] for index in range(0, len(digest), 2))


def _matches(pub, digest):
    """True when the key has the (normalized) fingerprint."""
    return _key_fingerprint(pub).replace(":", "") == digest


def _summarize(keys, hash_type=HASH_TYPE):
    """``[(state, pub), ...]`` as ``{state: [fingerprint, ...]}`` for the four key states."""
    ret = {state: [] for state in STATES}
    for state, pub in keys:
        ret[state].append(_key_fingerprint(pub, hash_type))
    return ret


def _describe(keys, hash_type=HASH_TYPE):
    """One line for messages: which states hold which fingerprints."""
    held = [f"{state} {', '.join(fps)}" for state, fps in _summarize(keys, hash_type).items() if fps]
    return "; ".join(held) if held else "no key"


def _decide(minion_id, keys, wanted=None, old_accepted=None):
    """
    What admit does next, from the keys the master holds for the id.

    keys
        ``[(state, pub), ...]``: at most one of accepted/pending/rejected (the key store keeps one entry
        per id), then the denied keys.

    wanted
        The normalized fingerprint the operator read on the VM, or None (trust the first key: only when the
        operator said trust_first_key=True).

    old_accepted
        The key that was accepted when admit started: a mismatching accepted key that is this one is the
        old VM's key (left alone); any other was accepted while admit waited (autosign) and is rejected.

    Returns ``(action, state, pub, message)``, action one of ``done`` (this accepted key is the one),
    ``accept`` (accept the key held in state), ``wait``, ``refuse`` (raise, change nothing) or ``reject``
    (reject the accepted key, then raise).
    """
    hash_type = HASH_TYPE
    entry = next(((state, pub) for state, pub in keys if state != "denied"), (None, None))
    state, pub = entry
    denied = [pub for state_, pub in keys if state_ == "denied"]
    denied_matching = [pub for pub in denied if wanted and _matches(pub, wanted)]
    seen = _describe(keys, hash_type)
    want = f"fingerprint {_pretty(wanted)}" if wanted else "no fingerprint given"
    replace_hint = f"salt-run minion_key.replace {minion_id} fingerprint=<{FINGER_COMMAND} on the VM>"

    if state == "accepted":
        if wanted is None:
            if denied:
                return (
                    "refuse",
                    state,
                    pub,
                    f"{minion_id}: the accepted key is not the only one: {seen}. Another machine presents a "
                    f"new key under this id; if the VM was replaced, run: {replace_hint}",
                )
            return ("done", state, pub, None)
        if _matches(pub, wanted):
            if denied:
                log.warning("%s: accepted key matches; denied key(s) left alone: %s", minion_id, seen)
            return ("done", state, pub, None)
        if old_accepted is not None and _same(pub, old_accepted):
            held = "the new one is denied" if denied_matching else "no key with that fingerprint is held"
            return (
                "refuse",
                state,
                pub,
                f"{minion_id}: the accepted key ({_key_fingerprint(pub, hash_type)}) is not the one with {want}; "
                f"{held} ({seen}). Nothing changed. If the VM was replaced, the old key must go first: "
                f"salt-run minion_key.replace {minion_id} fingerprint={_pretty(wanted)}. If autosign accepted "
                f"this key after a retire, it is not the machine you expect: salt-run minion_key.retire {minion_id}",
            )
        return (
            "reject",
            state,
            pub,
            f"{minion_id}: a key was accepted while waiting (autosign?) but its fingerprint "
            f"{_key_fingerprint(pub, hash_type)} is not {_pretty(wanted)}: it is now rejected, so autosign cannot "
            f"take it again (the master refuses every key of {minion_id} until it is retired). Check which "
            f"machine that is, then run: {replace_hint}",
        )

    if state == "rejected":
        if wanted and _matches(pub, wanted):
            return ("accept", state, pub, None)
        return (
            "refuse",
            state,
            pub,
            f"{minion_id}: its key is rejected ({seen}), and the master refuses every key of a rejected id; "
            f"{'it is not the key with ' + want if wanted else 'give the fingerprint to accept it'}. "
            f"To start over: {replace_hint}",
        )

    if state == "pending":
        if wanted is None or _matches(pub, wanted):
            return ("accept", state, pub, None)
        found = " (a denied key has it: another key got pending first)" if denied_matching else ""
        return (
            "refuse",
            state,
            pub,
            f"{minion_id}: the pending key's fingerprint {_key_fingerprint(pub, hash_type)} is not "
            f"{_pretty(wanted)}{found}; nothing accepted, the pending key is left as is ({seen}). Check the "
            f"fingerprint on the VM ({FINGER_COMMAND}); to drop that key: "
            f"salt-run minion_key.retire {minion_id}",
        )

    # no accepted/pending/rejected key: a denied key is accepted only on the operator's fingerprint
    if denied_matching:
        return ("accept", "denied", denied_matching[0], None)
    if denied:
        reason = (
            f"denied key(s) held, none with {want}"
            if wanted
            else "only denied key(s) held: pass fingerprint= to accept one"
        )
        return ("wait", None, None, f"{reason} ({seen})")
    return ("wait", None, None, "no key held")


def _pretty(digest):
    return ":".join(digest[index : index + 2] for index in range(0, len(digest), 2)) if digest else ""


def _same(pub, other):
    return pub.strip() == other.strip()


# ---- key store and data cache -------------------------------------------------------------------


def _check_id(minion_id):
    if not isinstance(minion_id, str) or not minion_id:
        raise SaltInvocationError(f"expected a minion id, got {minion_id!r}")
    if GLOB_CHARS & set(minion_id):
        raise SaltInvocationError(f"{minion_id!r}: one exact minion id, not a glob or a list")
    if not salt.utils.verify.valid_id(__opts__, minion_id):
        raise SaltInvocationError(f"{minion_id!r} is not a valid minion id")


def _check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise SaltInvocationError(f"timeout: expected a number of seconds >= 0, got {timeout!r}")


def _keys(skey, minion_id):
    """``[(state, pub), ...]`` held for the id: the accepted/pending/rejected entry, then denied keys."""
    try:
        entry = skey.cache.fetch("keys", minion_id)
        denied = skey.cache.fetch("denied_keys", minion_id)
    except SaltCacheError as err:
        raise CommandExecutionError(f"{minion_id}: cannot read the key store: {err}") from err
    keys = []
    if entry and entry.get("pub"):
        keys.append((entry["state"], entry["pub"]))
    if isinstance(denied, str):
        denied = [denied]
    keys.extend(("denied", pub) for pub in denied or [] if pub)
    return keys


def _data_caches():
    caches = [salt.cache.factory(__opts__)]
    driver = __opts__.get("pillar.cache_driver")
    if driver and driver != __opts__.get("cache"):
        caches.append(salt.cache.factory(__opts__, driver=driver))
    return caches


def _cached_data(minion_id):
    """``[(label, cache, bank, key), ...]``: the master's cached data for the id."""
    found = []
    try:
        for number, cache in enumerate(_data_caches()):
            banks = DATA_BANKS if number == 0 else ("pillar",)
            for bank in banks:
                if cache.contains(bank, minion_id):
                    found.append((bank, cache, bank, minion_id))
            if "pillar" in banks:
                # pillar cached per pillarenv: <id>:<pillarenv>
                for key in cache.list("pillar") or []:
                    if key.startswith(f"{minion_id}:"):
                        found.append((f"pillar {key}", cache, "pillar", key))
            if number == 0 and cache.contains(f"minions/{minion_id}"):
                # the per-minion bank of salt before 3008 (minions/<id>: data, mine)
                found.append((f"minions/{minion_id}", cache, f"minions/{minion_id}", None))
    except SaltCacheError as err:
        raise CommandExecutionError(f"{minion_id}: cannot read the master's data cache: {err}") from err
    return found


def _retire(skey, minion_id, keys, keep=None, clear_cache=True):
    """Delete the id's keys (but the one whose pub is keep) and its cached data; what was removed."""
    hash_type = HASH_TYPE
    cached = _cached_data(minion_id) if clear_cache else []
    removed = [(state, pub) for state, pub in keys if keep is None or not _same(pub, keep)]
    kept = [(state, pub) for state, pub in keys if keep is not None and _same(pub, keep)]
    kept_state = kept[0][0] if kept else None
    # the store holds one accepted/pending/rejected entry per id, and a list of denied keys: each is
    # deleted whole (a kept denied key is put back as pending below)
    match = {}
    for state, _ in removed:
        match.setdefault(KEY_DIRS[state], [minion_id])
    if kept_state == "denied":
        match.setdefault(KEY_DIRS["denied"], [minion_id])
    if match:
        # salt-key -d: fires the key events and has the master rotate its AES key (old sessions end)
        skey.delete_key(match_dict=match)
    if kept_state == "denied":
        # the key the operator vouched for: back as pending, for admit to accept
        skey.cache.store("keys", minion_id, {"pub": kept[0][1], "state": "pending"})
    if kept_state == "accepted":
        cached = []  # that data is the kept machine's own
    for _label, cache, bank, key in cached:
        try:
            cache.flush(bank, key)
        except SaltCacheError as err:
            raise CommandExecutionError(f"{minion_id}: cannot flush cached {bank}: {err}") from err
    ret = {"keys": {state: fps for state, fps in _summarize(removed, hash_type).items() if fps}}
    ret["cache"] = [label for label, *_ in cached]
    if kept:
        ret["kept"] = {kept_state: _key_fingerprint(kept[0][1], hash_type)}
    return ret


def _accept(skey, minion_id, state, pub, hash_type):
    if state == "denied":
        # salt-key would take the first denied key: put exactly this one in pending, then accept it
        others = [other for other_state, other in _keys(skey, minion_id) if other_state == "denied"]
        others = [other for other in others if not _same(other, pub)]
        if others:
            skey.cache.store("denied_keys", minion_id, others)
        else:
            skey.cache.flush("denied_keys", minion_id)
        skey.cache.store("keys", minion_id, {"pub": pub, "state": "pending"})
        state = "pending"
    skey.accept(
        match_dict={KEY_DIRS[state]: [minion_id]},
        include_rejected=state == "rejected",
    )
    now = _keys(skey, minion_id)
    if not any(now_state == "accepted" and _same(now_pub, pub) for now_state, now_pub in now):
        raise CommandExecutionError(
            f"{minion_id}: accepting the {state} key {_key_fingerprint(pub, hash_type)} did not take "
            f"(the master holds: {_describe(now, hash_type)}); see the master log"
        )


def _admit(skey, minion_id, wanted, timeout, old_accepted=None):
    """Wait for, check and accept the id's key. old_accepted: the key accepted before (see _decide)."""
    hash_type = HASH_TYPE
    keys = _keys(skey, minion_id)
    deadline = time.monotonic() + timeout
    while True:
        action, state, pub, message = _decide(minion_id, keys, wanted, old_accepted)
        if action == "done":
            return _key_fingerprint(pub, hash_type)
        if action == "accept":
            log.info("%s: accepting the %s key %s", minion_id, state, _key_fingerprint(pub, hash_type))
            _accept(skey, minion_id, state, pub, hash_type)
            return _key_fingerprint(pub, hash_type)
        if action == "refuse":
            raise CommandExecutionError(message)
        if action == "reject":
            skey.reject(match_dict={KEY_DIRS["accepted"]: [minion_id]}, include_accepted=True)
            raise CommandExecutionError(message)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            want = f" with fingerprint {_pretty(wanted)}" if wanted else ""
            again = f"salt-run minion_key.admit {minion_id} " + (
                f"fingerprint={_pretty(wanted)}" if wanted else "trust_first_key=True"
            )
            raise CommandExecutionError(
                f"{minion_id}: no key{want} to accept after {timeout}s: {message}. Is the VM up, with its "
                f"salt-minion pointed at this master? {RESTART_HINT}; then: {again}"
            )
        time.sleep(min(POLL_SECONDS, remaining))
        keys = _keys(skey, minion_id)


# ---- the runner functions -----------------------------------------------------------------------


def status(minion_id):
    """
    The keys the master holds for one minion id, by state, as sha256 fingerprints (the form
    ``salt-call --local key.finger hash_type=sha256`` prints on the minion). A new key under an id whose old
    key is still accepted shows up under ``denied``.

    CLI Example:

    .. code-block:: bash

        salt-run minion_key.status web9

    minion_id
        One exact minion id (no globs).
    """
    _check_id(minion_id)
    with salt.key.get_key(__opts__) as skey:
        keys = _keys(skey, minion_id)
    ret = {"id": minion_id, "hash_type": HASH_TYPE}
    ret.update(_summarize(keys))
    return ret


def _rolestack_pillar(minion_id):
    """The rolestack pillar the master derives for a minion id (its ext_pillar, as the minion would get it)."""
    # salt.pillar.Pillar, not get_pillar: that one would store the result in the master's pillar cache of the id
    pillar = salt.pillar.Pillar(__opts__, {}, minion_id, "base").compile_pillar()
    rolestack = pillar.get("rolestack") if isinstance(pillar, dict) else None
    if not isinstance(rolestack, dict) or not rolestack.get("platform"):
        errors = "; ".join(str(err) for err in (pillar or {}).get("_errors", [])[:3]) or "no rolestack:platform"
        raise CommandExecutionError(
            f"{minion_id}: cannot tell which other minion ids stand for this host without the master's rolestack "
            f"pillar ({errors}); fix the inventory or the ext_pillar configuration, then run this again"
        )
    return rolestack


def _host_ids(minion_id):
    """
    The ids that could stand for the host of minion_id: the id; for an inventory host name its FQDN form
    ``<name>.<level>.<domain>``; for an FQDN in the platform's zone its short form. Retiring them all leaves
    no stale key under another form accepted (it would get the host's pillar if an id ever maps to it).
    """
    rolestack = _rolestack_pillar(minion_id)
    zone = rolestack["platform"]["zone"]
    ids = [minion_id]
    host = rolestack.get("host") or {}
    if host.get("name") == minion_id and host.get("fqdn"):
        ids.append(host["fqdn"])
    short, _, rest = minion_id.partition(".")
    if rest and rest == zone:
        ids.append(short)
    return list(dict.fromkeys(ids))


def _retire_other_ids(skey, other_ids, clear_cache=True):
    """Retire the host's other ids (see _host_ids): {id: what was removed} for those that held anything."""
    retired = {}
    for other in other_ids:
        keys = _keys(skey, other)
        if keys or (clear_cache and _cached_data(other)):
            retired[other] = _retire(skey, other, keys, clear_cache=clear_cache)
    return retired


def _require_fingerprint(minion_id, wanted, trust_first_key, function):
    if wanted is None and trust_first_key is not True:
        raise SaltInvocationError(
            f"{minion_id}: no fingerprint given. {function} without one would accept whichever machine asks first "
            f"under this id (and give it the host's pillar and secrets). Read the fingerprint on the new VM's "
            f"console: {FINGER_COMMAND}; then: salt-run minion_key.{function} {minion_id} <sha256 fingerprint>. "
            f"To trust the first key that shows up anyway, say so: salt-run minion_key.{function} {minion_id} "
            "trust_first_key=True"
        )


def retire(minion_id, clear_cache=True):
    """
    Delete every key (accepted, pending, rejected and denied) of every id that could stand for the host of
    ``minion_id`` (the id; for an inventory host name also its FQDN form ``<name>.<level>.<domain>``; for such
    an FQDN also its short form), and the master's cached data for them (grains, pillar, mine), so that a new
    VM starts clean and no stale key under another form stays accepted. Returns what was removed, keys as
    sha256 fingerprints (the other ids under ``other_ids``).

    CLI Example:

    .. code-block:: bash

        salt-run minion_key.retire web9

    minion_id
        One exact minion id (no globs). An id whose forms hold no key and no cached data is an error.

    clear_cache
        False keeps the cached grains, pillar and mine of the ids.
    """
    _check_id(minion_id)
    other_ids = _host_ids(minion_id)[1:]
    with salt.key.get_key(__opts__) as skey:
        keys = _keys(skey, minion_id)
        held = keys or (clear_cache and _cached_data(minion_id))
        ret = _retire(skey, minion_id, keys, clear_cache=clear_cache) if held else {"keys": {}, "cache": []}
        others = _retire_other_ids(skey, other_ids, clear_cache=clear_cache)
        if not held and not others:
            raise CommandExecutionError(
                f"{minion_id}: unknown minion id, the master holds no key and no cached data for it or for "
                f"{', '.join(other_ids) or 'another form of it'} (salt-key -L lists the ids)"
            )
    if others:
        ret["other_ids"] = others
    return ret


def admit(minion_id, fingerprint=None, timeout=60, trust_first_key=False):
    """
    Accept the key of one minion id, when it has the sha256 fingerprint read on the VM, waiting up to
    ``timeout`` seconds for it to show up; returns the accepted key's fingerprint.

    - a pending key is accepted when it has the fingerprint (a different one is refused: nothing is
      accepted, the pending key is left as is);
    - a denied key (held while no other key is) is accepted only when it has the fingerprint;
    - an accepted key with the fingerprint is returned as is (e.g. autosign took it). One accepted while
      waiting with another fingerprint is rejected, then an error is raised. An accepted key that was
      already there with another fingerprint is the old VM's: refused, use ``replace``;
    - without a fingerprint: refused, unless ``trust_first_key=True`` (the first key that shows up is then
      accepted, whichever machine sent it).

    CLI Example:

    .. code-block:: bash

        # on the new VM (console): salt-call --local key.finger hash_type=sha256
        salt-run minion_key.admit web9 5e:0f:...:c2
        salt-run minion_key.admit web9 fingerprint=5e:0f:...:c2 timeout=300

    minion_id
        One exact minion id (no globs).

    fingerprint
        The key's sha256 fingerprint as read on the VM: ``salt-call --local key.finger hash_type=sha256``
        (colons optional). md5/sha1 fingerprints are refused.

    timeout
        Seconds to wait for a key to show up (0: look once).

    trust_first_key
        True to accept a key without a fingerprint (trust on first use): only when nothing else can ask
        under this id, e.g. a network only the new VM can reach.
    """
    _check_id(minion_id)
    wanted = _normalize_fingerprint(fingerprint)
    _require_fingerprint(minion_id, wanted, trust_first_key, "admit")
    _check_timeout(timeout)
    with salt.key.get_key(__opts__) as skey:
        old_accepted = next((pub for state, pub in _keys(skey, minion_id) if state == "accepted"), None)
        return _admit(skey, minion_id, wanted, timeout, old_accepted)


def replace(minion_id, fingerprint=None, timeout=60, trust_first_key=False):
    """
    The replaced VM flow in one command: retire the keys and cached data of every id that could stand for the
    host (as ``retire``), keeping only a key of the id that has the fingerprint (the new VM may already have
    asked: its key is then denied), then admit the new key. Run it before booting the replacement, or right
    after. Returns what was retired and the accepted fingerprint.

    CLI Example:

    .. code-block:: bash

        # on the new VM (console): salt-call --local key.finger hash_type=sha256
        salt-run minion_key.replace web9 fingerprint=5e:0f:...:c2

    minion_id
        One exact minion id (no globs).

    fingerprint
        The new VM's sha256 key fingerprint (``salt-call --local key.finger hash_type=sha256`` on it).

    timeout
        Seconds to wait for the new key to show up.

    trust_first_key
        True to accept the first key that shows up after the retirement without a fingerprint.
    """
    _check_id(minion_id)
    wanted = _normalize_fingerprint(fingerprint)
    _require_fingerprint(minion_id, wanted, trust_first_key, "replace")
    _check_timeout(timeout)
    if wanted is None:
        log.warning("%s: trust_first_key: the first key that shows up will be accepted", minion_id)
    other_ids = _host_ids(minion_id)[1:]
    with salt.key.get_key(__opts__) as skey:
        keys = _keys(skey, minion_id)
        keep = next((pub for _, pub in keys if wanted and _matches(pub, wanted)), None)
        retired = _retire(skey, minion_id, keys, keep=keep)
        others = _retire_other_ids(skey, other_ids)
        if others:
            retired["other_ids"] = others
        try:
            # after the retirement any accepted key is new (autosign), but the kept one
            accepted = _admit(skey, minion_id, wanted, timeout, old_accepted=None)
        except CommandExecutionError as err:
            gone = _describe([(state, pub) for state, pub in keys if keep is None or not _same(pub, keep)])
            raise CommandExecutionError(
                f"{err} (already retired: {gone}; cached data: {', '.join(retired['cache']) or 'none'})"
            ) from err
    return {"id": minion_id, "retired": retired, "accepted": accepted}
