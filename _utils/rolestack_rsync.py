"""
The salt host's rsync source (docs/roles/salt.md, "rsync modules"): pure logic, no Salt dunders.

The inventory's optional ``rsync`` key declares modules (a directory on the salt host, the roles whose hosts may
pull it, read-only unless ``writable: true``); ``secrets.rsync_modules`` holds one secret per module. From them:
:func:`validate` (every problem, each naming the key path, the value's type and what was expected; never a secret's
value), :func:`derive` (the salt host's ``rolestack:rsync_server``, each allowed host's ``rolestack:rsync_client``
and which module secrets each host receives), :func:`render_config` (``/etc/rsyncd.conf``), and the client's side:
:func:`pull_command` and :func:`run_pull` (the daemon's answer turned into a clear refusal).
"""

import ipaddress
import os
import posixpath
import re
import subprocess

from rolestack_inventory_schema import MIN_SECRET_LENGTH
from rolestack_inventory_schema import ROLES
from rolestack_inventory_schema import RSYNC_SECRET
from rolestack_inventory_schema import _check_list
from rolestack_inventory_schema import _check_mapping
from rolestack_inventory_schema import _check_secret_value
from rolestack_inventory_schema import _fmt
from rolestack_inventory_schema import _key
from rolestack_inventory_schema import _kind
from rolestack_inventory_schema import _optional_mapping

RSYNC_KEYS = ("modules",)
MODULE_KEYS = ("path", "roles", "writable", "comment")
MODULE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PATH_RE = re.compile(r"^/[A-Za-z0-9_.@+-]+(/[A-Za-z0-9_.@+-]+)*$")
COMMENT_RE = re.compile(r"^[^\x00-\x1f\x7f]{0,200}$")
# paths a module may not be (or be inside): the system's own directories
FORBIDDEN_PATHS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/root", "/run", "/sbin", "/sys", "/usr")
RSYNC_PORT = 873
CONFIG_FILE = "/etc/rsyncd.conf"
SECRETS_FILE = "/etc/rsyncd.secrets"
XINETD_FILE = "/etc/xinetd.d/rsync"
# the daemon's user for file access (it starts as root under xinetd, chroots into the module, then drops to it)
DAEMON_USER, DAEMON_GROUP = "nobody", "nogroup"
README = "README.md"
TIMEOUT_S = 600


class PullError(Exception):
    """A refused or failed pull; the message never holds a secret."""


def _nested(path, other):
    return path == other or path.startswith(other.rstrip("/") + "/")


def _check_path(path, value, err):
    if not isinstance(value, str) or not PATH_RE.match(value) or posixpath.normpath(value) != value:
        err(
            f"{path}: got {_fmt(value)} ({_kind(value)}), expected an absolute, normalized directory path of letters, "
            "digits and _.@+- such as '/srv/rsync/files'"
        )
        return False
    if value == "/" or any(_nested(value, forbidden) or _nested(forbidden, value) for forbidden in FORBIDDEN_PATHS):
        err(f"{path}: got {value!r}, expected a directory outside {', '.join(FORBIDDEN_PATHS)} (such as under /srv)")
        return False
    return True


def validate(inventory):
    """The ``rsync`` key and ``secrets.rsync_modules`` of an inventory mapping: the list of every problem."""
    errors = []
    err = errors.append
    spec = _check_mapping("rsync", inventory.get("rsync"), RSYNC_KEYS, err) or {}
    modules = _optional_mapping("rsync.modules", spec.get("modules"), "module name to settings", err)
    paths = {}  # path -> module
    for name, module in modules.items():
        path = f"rsync.modules.{_key(name)}"
        if not isinstance(name, str) or not MODULE_NAME_RE.match(name):
            err(
                f"{path}: module name {_fmt(name)} is not valid, expected a lowercase name such as 'files' (a-z, 0-9, _-)"
            )
            continue
        module = _check_mapping(path, module, MODULE_KEYS, err)
        if module is None:
            continue
        if "path" not in module:
            err(f"{path}.path: missing, expected the module's directory on the salt host, such as '/srv/rsync/{name}'")
        elif _check_path(f"{path}.path", module["path"], err):
            for other_path, other in paths.items():
                if _nested(module["path"], other_path) or _nested(other_path, module["path"]):
                    err(
                        f"{path}.path: {module['path']!r} overlaps the path {other_path!r} of module {other!r}, "
                        "expected separate directories"
                    )
            paths[module["path"]] = name
        if "roles" not in module:
            err(f"{path}.roles: missing, expected a non-empty list of the roles whose hosts may pull it")
        else:
            _check_list(f"{path}.roles", module["roles"], ROLES, "roles", err)
        if "writable" in module and not isinstance(module["writable"], bool):
            err(
                f"{path}.writable: got {_fmt(module['writable'])} ({_kind(module['writable'])}), expected true or false"
            )
        if "comment" in module and (not isinstance(module["comment"], str) or not COMMENT_RE.match(module["comment"])):
            err(
                f"{path}.comment: got {_fmt(module['comment'])} ({_kind(module['comment'])}), "
                "expected one line of at most 200 characters"
            )
    secrets = inventory.get("secrets")
    secrets = secrets.get(RSYNC_SECRET) if isinstance(secrets, dict) else None
    spath = f"secrets.{RSYNC_SECRET}"
    if secrets is not None and not isinstance(secrets, dict):
        err(f"{spath}: got {_kind(secrets)}, expected a mapping of rsync module name to its secret")
        secrets = {}
    secrets = secrets or {}
    for name, value in secrets.items():
        if name not in modules:
            err(
                f"{spath}.{_key(name)}: no such module in rsync.modules (value: {_kind(value)}), expected one secret "
                f"per declared module ({', '.join(map(str, modules)) or 'none declared'})"
            )
        else:
            _check_secret_value(f"{spath}.{name}", value, err)
    for name in modules:
        if isinstance(name, str) and MODULE_NAME_RE.match(name) and name not in secrets:
            err(
                f"{spath}.{name}: missing, expected the secret of rsync module {name!r} "
                f"(a string of at least {MIN_SECRET_LENGTH} characters)"
            )
    return errors


def derive(inventory, entries, server):
    """
    The rsync pillar pieces of a valid inventory. ``entries``: the derivation's host entries (name, fqdn, address,
    roles), ``server``: the salt host's entry. Returns ``{"server": rsync_server or None, "clients": {host:
    rsync_client}, "secrets": {host: {module: secret}}}``: the salt host gets every module's secret, a host every
    module it may pull (one of its roles is listed, and its address is known: a pending host is in no
    ``hosts allow`` yet).
    """
    modules = ((inventory.get("rsync") or {}).get("modules")) or {}
    all_secrets = (inventory.get("secrets") or {}).get(RSYNC_SECRET) or {}
    if not modules:
        return {"server": None, "clients": {}, "secrets": {}}
    served, clients, secrets = {}, {}, {}
    for name, spec in sorted(modules.items()):
        allowed = [
            entry
            for entry in entries
            if entry["address"] and entry["name"] != server["name"] and set(entry["roles"]) & set(spec["roles"])
        ]
        served[name] = {
            "path": spec["path"],
            "read_only": not spec.get("writable", False),
            "roles": list(spec["roles"]),
            "hosts_allow": sorted({entry["address"] for entry in allowed}, key=ipaddress.ip_address),
            "auth_user": name,
            "comment": spec.get("comment") or f"rolestack rsync module {name}",
        }
        served[name]["readme"] = module_readme(name, served[name])
        for entry in allowed:
            client = clients.setdefault(
                entry["name"],
                {"server": server["fqdn"], "address": server["address"], "port": RSYNC_PORT, "modules": {}},
            )
            client["modules"][name] = {
                "user": name,
                "read_only": served[name]["read_only"],
                "comment": served[name]["comment"],
            }
            secrets.setdefault(entry["name"], {})[name] = all_secrets[name]
    secrets[server["name"]] = {name: all_secrets[name] for name in served}
    rsync_server = {
        "port": RSYNC_PORT,
        "config_file": CONFIG_FILE,
        "secrets_file": SECRETS_FILE,
        "xinetd_file": XINETD_FILE,
        "user": DAEMON_USER,
        "group": DAEMON_GROUP,
        "modules": served,
        "config": render_config(served, SECRETS_FILE),
    }
    return {"server": rsync_server, "clients": clients, "secrets": secrets}


def render_config(modules, secrets_file):
    """
    ``/etc/rsyncd.conf`` for the modules of ``rolestack:rsync_server``: chrooted, unlisted, every module denied to
    every host but its ``hosts allow`` and to every user but its own, read-only unless declared writable; the
    README.md the salt role puts in each directory is hidden from pulls and protected from uploads.
    """
    lines = [
        "# managed by salt (rolestack salt role): the rsync modules of the inventory's rsync key.",
        "# Edit the inventory, not this file. rsync reads it at each connection (started by xinetd).",
        f"uid = {DAEMON_USER}",
        f"gid = {DAEMON_GROUP}",
        "use chroot = yes",
        "list = no",
        "reverse lookup = no",
        "strict modes = yes",
        f"timeout = {TIMEOUT_S}",
        f"secrets file = {secrets_file}",
        "hosts deny = *",
    ]
    for name, spec in sorted(modules.items()):
        lines += [
            "",
            f"[{name}]",
            f"    comment = {spec['comment']}",
            f"    path = {spec['path']}",
            f"    read only = {'yes' if spec['read_only'] else 'no'}",
            f"    auth users = {spec['auth_user']}",
            "    hosts deny = *",
        ]
        if spec["hosts_allow"]:  # none: every host is denied
            lines.append(f"    hosts allow = {' '.join(spec['hosts_allow'])}")
        lines.append(f"    exclude = /{README}")
    return "\n".join(lines) + "\n"


def render_secrets(modules, secrets):
    """``/etc/rsyncd.secrets``: ``user:secret`` per module (mode 0600, root's)."""
    return "".join(f"{spec['auth_user']}:{secrets[name]}\n" for name, spec in sorted(modules.items()))


def module_readme(name, spec):
    """The README.md of a module's directory: what manages it."""
    access = "read-only" if spec["read_only"] else "writable"
    return (
        f"# rsync module `{name}`\n\n"
        f"Managed by salt (rolestack salt role, states/salt/rsync.sls) from the inventory's `rsync.modules.{name}`.\n"
        f"Served {access} by the rsync daemon (xinetd) to the hosts with role(s) {', '.join(spec['roles'])}; they "
        f"pull it with `salt-call rolestack_rsync.pull {name} <dest>`. The files here are the operators'; this "
        "README is hidden from pulls.\n"
    )


def choose_module(client, module, minion):
    """The client entry of ``module`` for this host, or PullError naming what it may pull."""
    allowed = sorted((client or {}).get("modules") or {})
    if module not in allowed:
        raise PullError(
            f"{minion} may not pull rsync module {module!r}: its roles are in no rsync.modules.{module}.roles of the "
            f"inventory (modules it may pull: {', '.join(allowed) or 'none'})"
        )
    return client["modules"][module]


def pull_command(client, module, dest, delete=False, rsync="rsync"):
    """The argv of a pull of ``module`` (the password goes in RSYNC_PASSWORD, never in the argv)."""
    if not isinstance(dest, str) or not os.path.isabs(dest):
        raise PullError(f"dest: got {_fmt(dest)}, expected an absolute directory path")
    spec = client["modules"][module]
    argv = [rsync, "--recursive", "--links", "--perms", "--times", "--out-format=%n", f"--timeout={TIMEOUT_S}"]
    if delete:
        argv.append("--delete")
    url = f"rsync://{spec['user']}@{client['address'] or client['server']}:{client['port']}/{module}/"
    return [*argv, url, dest.rstrip("/") + "/"]


def run_pull(argv, secret, timeout=TIMEOUT_S):
    """Run a pull; returns the transferred names. PullError with the daemon's refusal (never the secret)."""
    env = {key: value for key, value in os.environ.items() if key != "RSYNC_PASSWORD"}
    env["RSYNC_PASSWORD"] = secret
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PullError(f"running {argv[0]}: {error}") from None
    if done.returncode:
        message = " ".join(done.stderr.replace(secret, "<secret>").split())[:600]
        refusal = re.search(r"@ERROR: [^\n]*", done.stderr.replace(secret, "<secret>"))
        what = refusal.group(0) if refusal else message
        if "Unknown module" in what:
            what += " (the daemon also answers so to a host outside the module's hosts allow)"
        raise PullError(f"{argv[-2]} refused or failed (rsync exit {done.returncode}): {what}")
    return [line for line in done.stdout.splitlines() if line and line != "./"]
