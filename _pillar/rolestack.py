"""
rolestack ext_pillar: gives each minion its place in the platform, derived from one inventory.

Each minion gets, under the ``rolestack`` key, its own roles/level/address and the topology its roles
need (masterdb and db peers, session/cache cluster members, mail relay, backup host, DNS server,
allow-lists), and only the secrets its roles need. A host's one minion id is its inventory host name; any
other id (an FQDN included) gets the common part, without secrets. See ``docs/inventory.md``.

Configuration (master config), one source:

.. code-block:: yaml

    ext_pillar:
      - rolestack:
          # a YAML file; a relative path is looked up in the pillar_roots of the base environment
          inventory: inventory.yaml
          # or: a file in a git repository, at the tip of a branch (commit a change and the platform follows)
          # git: {repo: /srv/git/pillar.git, ref: main, path: inventory.yaml}

There is no ``pillar_key`` source any more (the inventory read from the ordinary pillar tree): every minion's
pillar then held the whole inventory, secrets included. Setting it is refused with a SaltConfigurationError.

The derivation runs once per inventory version (file stat or git commit) and is cached
under ``<cachedir>/rolestack/``, one small file per minion: a host's render reads a small ``meta.json`` (the
staleness check) and its own file, whatever the number of hosts; only an id that looks like a host name and has
no file reads the list of hosts. The git source reads the branch from the ref files (loose or packed), without a
``git`` process. An invalid inventory raises, so Salt puts the error in ``_errors`` and refuses the
highstate: a half topology is never served.
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import types

import salt.cache
from salt.exceptions import SaltConfigurationError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_extmods as extmods
    import rolestack_inventory as logic
    import rolestack_inventory_schema as schema
    import rolestack_jumpbox as jumpbox
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "rolestack"


def _source_digest(module):
    """
    The digest of ``module``'s source as it was when the module was imported into this process: taken once, the
    first time this ext_pillar meets the module (just after importing it), and kept on the module object. The master
    imports a util once and keeps it while the ext_pillar module itself is loaded again from disk: a digest of the
    files on disk would name code that has not run yet, and file a derivation by the old code under the new code's
    name (a push of new code, one pillar compile, a master restart: the stale entry looked current).
    """
    stamp = "_rolestack_source_digest"
    if not hasattr(module, stamp):
        with open(module.__file__, "rb") as handle:
            setattr(module, stamp, hashlib.sha256(handle.read()).hexdigest())
    return getattr(module, stamp)


def _derivation_modules(*roots):
    """``roots`` and every rolestack util they import, directly or not (the zones, jump box, rsync, sql utils...)."""
    found, todo = {}, list(roots)
    while todo:
        module = todo.pop()
        if module.__name__ in found:
            continue
        found[module.__name__] = module
        todo += [value for value in vars(module).values() if isinstance(value, types.ModuleType)
                 and value.__name__.startswith("rolestack_") and getattr(value, "__file__", None)]  # fmt: skip
    return [found[name] for name in sorted(found)]


def _code_version(modules):
    """A digest of the code that derives pillars: this module and every util the derivation runs. New code starts
    a new cache."""
    digest = hashlib.sha256()
    with open(__file__, "rb") as handle:
        digest.update(handle.read())
    for module in modules:
        digest.update(f"{module.__name__}={_source_digest(module)};".encode())
    return digest.hexdigest()[:12]


# the derivation's code: this module and every util it derives with, those writing the files' texts (banners,
# resolv.conf, sshd, the firewall, the zones) included: a new version of one reaches the minions without a change
# of the inventory, once the master runs it
CACHE_FORMAT = None if MISSING_UTIL else _code_version(_derivation_modules(logic, schema))


def __virtual__():
    if MISSING_UTIL:
        return (
            False,
            f"rolestack ext_pillar: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install rolestack)",
        )
    return __virtualname__


def _pillar_roots_path(path):
    if os.path.isabs(path):
        return path
    for root in __opts__.get("pillar_roots", {}).get("base", []):
        candidate = os.path.join(root, path)
        if os.path.exists(candidate):
            return candidate
    raise SaltConfigurationError(f"rolestack ext_pillar: inventory {path!r} not found in pillar_roots:base")


def _object_id(text):
    """text when it is a full object id (sha1 or sha256), else None (a symbolic ref, a damaged file)."""
    text = text.strip()
    return text if len(text) in (40, 64) and all(char in "0123456789abcdef" for char in text) else None


def _packed_ref(git_dir, refname):
    """The object id of refname in git_dir/packed-refs (what git gc and a mirror clone leave), or None."""
    try:
        with open(os.path.join(git_dir, "packed-refs"), encoding="utf-8") as handle:
            for line in handle:
                # "<id> <refname>" lines; "# pack-refs with: ..." header, "^<id>" peeled tags
                object_id, _, name = line.rstrip("\n").partition(" ")
                if name == refname:
                    return _object_id(object_id)
    except OSError:
        pass
    return None


def _git_ref_commit(repo, ref):
    """
    The commit id of a branch, read from the ref files as git does (the loose ref, else packed-refs): a render
    starts no process. Anything else (a tag or commit id as ref, a symbolic ref, a worktree) asks git.
    """
    git_dir = os.path.join(repo, ".git") if os.path.isdir(os.path.join(repo, ".git")) else repo
    refname = f"refs/heads/{ref}"
    try:
        with open(os.path.join(git_dir, refname), encoding="ascii") as handle:
            commit = _object_id(handle.read())
    except (OSError, ValueError):
        commit = _packed_ref(git_dir, refname)
    if commit:
        return commit
    try:
        return subprocess.run(
            ["git", "-C", repo, "rev-parse", "--verify", f"{ref}^{{commit}}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        raise SaltConfigurationError(f"rolestack ext_pillar: cannot read branch {ref!r} of {repo}: {err}") from err


class _Source:
    """Where the inventory comes from: a fingerprint that is cheap to compute, and the text when needed."""

    def __init__(self, inventory=None, git=None, pillar_key=None):
        if pillar_key:
            raise SaltConfigurationError(
                "rolestack ext_pillar: the pillar_key source was removed: it put the whole inventory, secrets "
                "included, in every minion's pillar. Set inventory: (a file in pillar_roots) or git: {repo, ref, "
                "path} instead, keep the inventory out of the pillar top file, and change the secrets it held"
            )
        if len([option for option in (inventory, git) if option]) != 1:
            raise SaltConfigurationError("rolestack ext_pillar: set exactly one of inventory, git")
        if inventory:
            self.path = _pillar_roots_path(inventory)
            try:
                stat = os.stat(self.path)
            except OSError as err:
                raise SaltConfigurationError(f"rolestack ext_pillar: cannot read {self.path}: {err}") from err
            self.name = self.path
            self.fingerprint = f"file:{self.path}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"
            self._read = self._read_file
        elif git:
            if not isinstance(git, dict) or not git.get("repo") or not git.get("path"):
                raise SaltConfigurationError("rolestack ext_pillar: git needs repo and path (and optionally ref)")
            self.repo, self.ref, self.path = git["repo"], git.get("ref", "main"), git["path"]
            commit = _git_ref_commit(self.repo, self.ref)
            self.name = f"{self.repo}@{self.ref}:{self.path}"
            self.fingerprint = f"git:{self.repo}:{self.path}:{commit}"
            self.commit = commit
            self._read = self._read_git

    def _read_file(self):
        with open(self.path, encoding="utf-8") as handle:
            return handle.read()

    def _read_git(self):
        try:
            return subprocess.run(
                ["git", "-C", self.repo, "show", f"{self.commit}:{self.path}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as err:
            raise SaltConfigurationError(f"rolestack ext_pillar: cannot read {self.name}: {err}") from err

    def load(self):
        return logic.load_yaml(self._read(), self.name)


def _mine_cache():
    return salt.cache.factory(__opts__)


# where the master keeps a minion's mine: salt 3008 uses bank "mine", key <id>; older salt "minions/<id>", "mine"
MINE_LOCATIONS = (("mine", "{minion}"), ("minions/{minion}", "mine"))


def _mine_location(cache, minion):
    """(bank, key) holding this minion's mine data, or None."""
    for bank, key in MINE_LOCATIONS:
        bank, key = bank.format(minion=minion), key.format(minion=minion)
        try:
            if cache.contains(bank, key):
                return bank, key
        except Exception:  # pylint: disable=broad-except
            continue
    return None


def _mine_fingerprint(cache, hosts):
    """When each pending host last updated its mine data: a change invalidates the derivation."""
    marks = []
    for host in hosts:
        location = _mine_location(cache, host)
        if location:
            try:
                marks.append(f"{host}:{cache.updated(*location)}")
            except Exception:  # pylint: disable=broad-except
                marks.append(f"{host}:-")
    return "|".join(marks)


def _mine_of(cache, minion):
    """The mine data the master holds for this minion id, {} when none (or unreadable)."""
    location = _mine_location(cache, minion)
    try:
        mine = cache.fetch(*location) if location else None
    except Exception:  # pylint: disable=broad-except
        mine = None
    return mine if isinstance(mine, dict) else {}


def _mine_addresses(cache, hosts):
    """
    The mine addresses of hosts without an inventory address, read under the host name only: a host's one
    minion id (any other id, e.g. an FQDN, could be enrolled by someone else).
    """
    found = {}
    for host in hosts:
        addresses = _mine_of(cache, host).get("network.ip_addrs")
        if addresses:
            found[host] = addresses
    return found


def _mine_host_keys(cache, hosts):
    """
    The public host keys each host published in the mine (``ssh.host_keys``), read under the host name only;
    a host that has not published them is left out (rolestack_jumpbox.known_hosts says so in a comment).
    """
    found = {}
    for host in hosts:
        keys = _mine_of(cache, host).get(jumpbox.HOST_KEYS_FUNCTION)
        if isinstance(keys, dict):
            found[host] = keys
    return found


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, separators=(",", ":"))


def _build(source, cache_root, entry_dir):
    """Load, validate and derive; write the result (or the errors) into entry_dir atomically."""
    meta = {"source": source.name, "format": CACHE_FORMAT, "pending": [], "mine": "", "invalid": False}
    tmp = tempfile.mkdtemp(prefix=".build-", dir=cache_root)
    missing, cache = [], None
    try:
        try:
            inventory = source.load()
            errors = logic.validate(inventory)
            if errors:
                raise logic.InventoryError(errors, source.name)
            missing = logic.missing_addresses(inventory)
            cache = _mine_cache() if missing else None
            mine = _mine_addresses(cache, missing) if missing else {}
            derived = logic.derive(inventory, mine)
        except logic.InventoryError as err:
            if err.source is None:
                err = logic.InventoryError(err.errors, source.name)
            _write_json(os.path.join(tmp, "errors.json"), {"message": str(err)})
            meta["invalid"] = True
            derived = None
            # a mine address refused (a clash): built again when those hosts' mine data changes
            meta.update(pending=missing, mine=_mine_fingerprint(cache, missing) if missing else "")
        if derived is not None:
            os.mkdir(os.path.join(tmp, "hosts"))
            for name, pillar in derived["hosts"].items():
                _write_json(os.path.join(tmp, "hosts", f"{name}.json"), pillar)
            _write_json(os.path.join(tmp, "common.json"), derived["common"])
            # read only when an id has no file of its own (meta.json stays small: every render reads it)
            _write_json(os.path.join(tmp, "hosts.json"), sorted(derived["hosts"]))
            meta["pending"] = derived["common"]["pending"]
            meta["mine"] = _mine_fingerprint(cache, meta["pending"]) if meta["pending"] else ""
        _write_json(os.path.join(tmp, "meta.json"), meta)
        if _current(entry_dir):
            # another master worker built this version meanwhile: never pull a good entry from under its readers
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if os.path.isdir(entry_dir):
            # stale (the mine moved): out of the way in one rename, then the new one in another
            aside = tempfile.mkdtemp(prefix=".stale-", dir=cache_root)
            with contextlib.suppress(OSError):
                os.rename(entry_dir, os.path.join(aside, "entry"))
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(tmp, entry_dir)
        except OSError:
            # another master worker built the same version first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for other in os.listdir(cache_root):
        if other != os.path.basename(entry_dir) and not other.startswith("."):
            shutil.rmtree(os.path.join(cache_root, other), ignore_errors=True)


def _current(entry_dir):
    """The entry exists, is complete and not stale."""
    try:
        with open(os.path.join(entry_dir, "meta.json"), encoding="utf-8") as handle:
            meta = json.load(handle)
    except (FileNotFoundError, ValueError):
        return False
    return not (meta["pending"] and _mine_fingerprint(_mine_cache(), meta["pending"]) != meta["mine"])


def _read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _read_entry(entry_dir, minion_id):
    """The cached pillar of a minion; None when the entry is missing or stale."""
    try:
        meta = _read_json(os.path.join(entry_dir, "meta.json"))
        if meta["pending"] and _mine_fingerprint(_mine_cache(), meta["pending"]) != meta["mine"]:
            return None
        if meta["invalid"]:
            raise SaltInvocationError(_read_json(os.path.join(entry_dir, "errors.json"))["message"])
        # a host's one minion id is its inventory name (a DNS label, never a path); any other id is not a host's
        if schema.LABEL_RE.fullmatch(minion_id):
            # the host's own file: one small read, whatever the number of hosts
            with contextlib.suppress(FileNotFoundError):
                return _read_json(os.path.join(entry_dir, "hosts", f"{minion_id}.json"))
            # no file: a listed host's means the entry is being replaced (None: read again, never the common
            # pillar of a host outside the inventory)
            if minion_id in _read_json(os.path.join(entry_dir, "hosts.json")):
                return None
        return _read_json(os.path.join(entry_dir, "common.json"))
    except FileNotFoundError:
        return None


def ext_pillar(minion_id, pillar, inventory=None, git=None, pillar_key=None, key="rolestack"):  # pylint: disable=unused-argument
    """
    Return ``{key: <derived pillar of minion_id>}``. Raises SaltInvocationError when the inventory is
    invalid (Salt then reports it in ``_errors`` and refuses states), SaltConfigurationError when this
    ext_pillar is misconfigured.
    """
    source = _Source(inventory=inventory, git=git, pillar_key=pillar_key)
    cache_root = os.path.join(__opts__["cachedir"], "rolestack", "inventory")
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{source.fingerprint}".encode()).hexdigest()[:24]
    entry_dir = os.path.join(cache_root, digest)
    data = _read_entry(entry_dir, minion_id)
    for _attempt in range(3):  # concurrent master workers may be replacing a stale entry
        if data is not None:
            break
        os.makedirs(cache_root, exist_ok=True)
        _build(source, cache_root, entry_dir)
        data = _read_entry(entry_dir, minion_id)
    if data is None:
        raise SaltInvocationError(f"rolestack ext_pillar: the derived inventory of {source.name} vanished while read")
    # what the master serves of _modules, _states, _utils: the base role syncs them only when this minion's differ
    served = extmods.served_dirs(__opts__)
    if served is not None:
        data["extensions_digest"] = extmods.digest(served)
    # the jump box's known_hosts, from the mine as it is now (not cached with the derivation: a replaced host's new
    # keys are there at the salt host's next highstate)
    box = data.get("jumpbox")
    if box:
        names = [entry["name"] for entry in box.get("hosts") or []]
        box["known_hosts"] = jumpbox.known_hosts(box.get("hosts") or [], _mine_host_keys(_mine_cache(), names))
    # the salt host (the CA) reads its signing policies at the top level, where x509_v2 looks for them
    policies = data.pop("x509_signing_policies", None)
    return {key: data, **({"x509_signing_policies": policies} if policies else {})}
