"""
One digest of the extension modules (``_modules``, ``_states``, ``_utils``) as the master serves them and as a
minion holds them after ``saltutil.sync_*``: the base role syncs only when the two differ.

Why: each ``saltutil.sync_<kind>`` opens a file client and asks the master for the hash of every file, one
request each (about 0.45 s of every highstate for the three kinds, with nothing to sync). The ext_pillar gives each
minion the master's digest (``rolestack:extensions_digest``, from the files of the ``roots`` fileserver); the
minion compares it with the digest of its own copies (``rolestack_extmods.local_digest``) while rendering.

Both sides digest the same thing: per kind, every file ``saltutil`` syncs (``.py``, ``.pyx``, ``.so``, ``.zip``)
by its path relative to the kind's directory and the SHA-256 of its contents; for the master, the first file root
holding a path wins, as in salt's fileserver. A master that serves through another backend gets no digest, and its
minions sync at every highstate, as salt does.
"""

import hashlib
import os
import re

KINDS = ("modules", "states", "utils")
# the files saltutil.sync_* copies (salt.utils.extmods.sync's include_pat)
SYNCED = re.compile(r"\.(pyx?|so|zip)$")

# (path, size, mtime_ns) -> SHA-256 of the contents: a file is read again only when it changed
_hashes = {}


def _file_hash(path):
    found = os.stat(path)
    key = (path, found.st_size, found.st_mtime_ns)
    if key not in _hashes:
        with open(path, "rb") as handle:
            _hashes[key] = hashlib.sha256(handle.read()).hexdigest()
    return _hashes[key]


def _files(top):
    """{path relative to top: absolute path} of the synced files under top (nothing when it is no directory)."""
    found = {}
    for root, dirs, names in os.walk(top):
        dirs[:] = sorted(name for name in dirs if name != "__pycache__")
        for name in names:
            if SYNCED.search(name):
                path = os.path.join(root, name)
                found[os.path.relpath(path, top)] = path
    return found


def digest(dirs_by_kind):
    """
    The digest of ``{kind: [directory, ...]}``: for each kind, the files of its directories (the first directory
    holding a relative path wins), each by relative path and content.
    """
    total = hashlib.sha256()
    for kind in KINDS:
        files = {}
        for top in dirs_by_kind.get(kind, []):
            for rel, path in _files(top).items():
                files.setdefault(rel, path)
        for rel in sorted(files):
            total.update(f"{kind}/{rel}\0{_file_hash(files[rel])}\n".encode())
    return total.hexdigest()


def served_dirs(opts):
    """``{kind: [<root>/_<kind>, ...]}`` of the base environment's file roots, or None when the master serves files
    through a backend other than roots (then only salt's own sync knows what it would copy)."""
    if list(opts.get("fileserver_backend") or ["roots"]) != ["roots"]:
        return None
    roots = (opts.get("file_roots") or {}).get("base") or []
    return {kind: [os.path.join(root, f"_{kind}") for root in roots] for kind in KINDS}


def local_dirs(extension_modules):
    """``{kind: [<extension_modules>/<kind>]}``: where saltutil.sync_* puts a minion's copies."""
    return {kind: [os.path.join(extension_modules, kind)] for kind in KINDS}
