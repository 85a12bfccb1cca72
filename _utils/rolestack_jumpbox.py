"""
The salt host as the platform's SSH jump box (docs/roles/salt.md, "Jump box"): the inventory's ``operators``
(validation), what the derivation gives every host (``rolestack:ssh``: who may connect, the operators' accounts)
and the salt host (``rolestack:jumpbox``: the ssh_config operators copy, the hosts of known_hosts), the text of
sshd's drop-in (``rolestack:ssh:sshd_config``), the ssh_config text and the known_hosts text built from the host
keys the hosts publish in the mine. Pure logic, no Salt dunders.

Used by ``rolestack_inventory_schema`` (validation), ``rolestack_inventory`` (derivation) and
``_modules/rolestack_jumpbox.py`` (known_hosts from the mine). Unit tests: tests/unit/test_rolestack_jumpbox.py.
"""

import base64
import binascii
import ipaddress
import re
import struct

OPERATOR_KEYS = ("ssh_keys", "sudo")
# a login name every Debian tool accepts (useradd's default NAME_REGEX, without the trailing $), not a system one
OPERATOR_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RESERVED_NAMES = frozenset(
    ("root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data",
     "backup", "list", "irc", "nobody", "sshd", "salt", "mysql", "redis", "memcache", "nutcracker", "gdnsd",
     "messagebus", "systemd-network", "systemd-resolve", "systemd-timesync", "_apt", "ssh", "sudo", "admin", "adm",
     "operator", "staff", "users")
)  # fmt: skip
# the public key types OpenSSH accepts in authorized_keys (DSA is gone from OpenSSH 9.8)
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
SSH_PORT = 22
SSH_CONFIG = "/etc/rolestack/ssh_config"
KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
# the mine function every host publishes its public host keys with (base role's minion config)
HOST_KEYS_FUNCTION = "ssh.host_keys"
HOST_KEYS_MINE = {HOST_KEYS_FUNCTION: [{"private": False}, {"certs": False}]}


def _fmt(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value):
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def parse_public_key(line):
    """
    One OpenSSH public key line ``TYPE BASE64 [comment]`` (no options before the type): ``(type, base64,
    comment)``. The base64 must decode, and the blob must name the same type (its first field). Raises ValueError
    saying what is wrong.
    """
    if not isinstance(line, str):
        raise ValueError(f"got {_kind(line)}")
    if "\n" in line.strip() or "\r" in line:
        raise ValueError("it spans several lines (one key per list item)")
    fields = line.strip().split(None, 2)
    if len(fields) < 2:
        raise ValueError("it has no base64 part")
    key_type, blob = fields[0], fields[1]
    if key_type not in KEY_TYPES:
        raise ValueError(f"type {_fmt(key_type)} is not one of {', '.join(KEY_TYPES)} (options before it are refused)")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("its second field is not base64") from None
    if len(raw) < 4:
        raise ValueError("its base64 blob is too short")
    (length,) = struct.unpack(">I", raw[:4])
    if raw[4 : 4 + length] != key_type.encode() or len(raw) <= 4 + length:
        raise ValueError(f"its base64 blob is not a {key_type} key")
    return key_type, blob, fields[2] if len(fields) > 2 else ""


def validate_operators(operators, err):
    """Append to ``err`` every problem of the inventory's ``operators`` (optional: absent means none)."""
    if operators is None:
        return
    if not isinstance(operators, dict):
        err(f"operators: got {_kind(operators)}, expected a mapping of login name to {{ssh_keys, sudo}}")
        return
    for name, spec in operators.items():
        path = f"operators.{name}"
        if not isinstance(name, str) or not OPERATOR_NAME_RE.match(name):
            err(
                f"{path}: login name {_fmt(name)} is not valid, expected lowercase letters, digits, - and _ (a-z first)"
            )
            continue
        if name in RESERVED_NAMES:
            err(f"{path}: login name {name!r} is a system account or group, expected a person's login")
            continue
        if not isinstance(spec, dict):
            err(f"{path}: got {_kind(spec)}, expected a mapping with keys {', '.join(OPERATOR_KEYS)}")
            continue
        for key in spec:
            if key not in OPERATOR_KEYS:
                err(
                    f"{path}.{key}: unknown key (value: {_kind(spec[key])}), expected one of {', '.join(OPERATOR_KEYS)}"
                )
        if "sudo" not in spec:
            err(f"{path}.sudo: missing, expected true or false (a declared choice)")
        elif not isinstance(spec["sudo"], bool):
            err(f"{path}.sudo: got {_fmt(spec['sudo'])} ({_kind(spec['sudo'])}), expected true or false")
        keys = spec.get("ssh_keys")
        if not isinstance(keys, list) or not keys:
            err(f"{path}.ssh_keys: got {_kind(keys)}, expected a non-empty list of ssh public key lines")
            continue
        seen = {}
        for index, line in enumerate(keys):
            try:
                _type, blob, _comment = parse_public_key(line)
            except ValueError as problem:
                err(
                    f"{path}.ssh_keys[{index}]: got {_fmt(line)}: {problem}, expected an ssh public key line "
                    "'TYPE BASE64 [comment]' (the content of a .pub file)"
                )
                continue
            if blob in seen:
                err(f"{path}.ssh_keys[{index}]: the same key as ssh_keys[{seen[blob]}], expected each key once")
            seen[blob] = index


def operators_pillar(operators):
    """The operators' accounts (every host): name -> {ssh_keys, sudo}, sorted by name, keys normalised."""
    return {
        name: {
            "ssh_keys": [" ".join(parse_public_key(line)).strip() for line in spec["ssh_keys"]],
            "sudo": spec["sudo"],
        }
        for name, spec in sorted((operators or {}).items())
    }


def ssh_pillar(jump_host, is_jump_host, operators):
    """
    ``rolestack:ssh`` of one host: ``jump_host`` (the salt host's member entry, None when unknown),
    ``allow_from`` (the addresses sshd and the firewall admit: the salt host's, empty on the salt host itself, which
    operators reach from anywhere, and while the salt host's address is unknown), ``allow_users`` (sshd's
    AllowUsers patterns, empty for no restriction) and ``operators`` (the accounts).
    """
    address = (jump_host or {}).get("address")
    restrict = bool(address) and not is_jump_host
    return {
        "jump_host": jump_host,
        "allow_from": [address] if restrict else [],
        "allow_users": [f"*@{address}", "*@127.0.0.1", "*@::1"] if restrict else [],
        "operators": operators,
    }


def firewall_service(allow_from):
    """The host firewall's ssh service (rolestack:firewall:services), or None when sshd is not restricted."""
    if not allow_from:
        return None
    return {"name": "ssh", "port": SSH_PORT, "allow": [str(ipaddress.ip_network(a)) for a in allow_from]}


# sshd's drop-in of every host (states/ssh, /etc/ssh/sshd_config.d/00-rolestack.conf)
SSHD_SETTINGS = (
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin no",
    "PubkeyAuthentication yes",
    "PermitEmptyPasswords no",
)


def sshd_config_text(allow_users, jump_host):
    """
    sshd's drop-in (``rolestack:ssh:sshd_config``): keys only, no root login; with ``allow_users`` (every host but
    the salt host, :func:`ssh_pillar`) ``AllowUsers`` those patterns only, naming the jump host (its member entry).
    """
    head = "# managed by salt (rolestack, states/ssh): keys only, no root login"
    lines = [head + (", connections from the jump box only" if allow_users else ""), *SSHD_SETTINGS]
    if allow_users:
        lines += [
            f"# only the salt host ({jump_host['name']}) and loopback may connect: operators come through the jump "
            "box (ssh -J)",
            f"AllowUsers {' '.join(allow_users)}",
        ]
    return "\n".join(lines) + "\n"


def ssh_config(platform, hosts, jump_host):
    """
    The ssh_config operators copy to their laptop: one ``Host`` block per inventory host with an address (its name
    and FQDN), ``HostName`` its address, ``ProxyJump`` the salt host (by its block's name) for every other host,
    host keys checked against the platform's known_hosts.
    """
    zone, level = platform["zone"], platform["level"]
    known = f"~/.ssh/known_hosts ~/.ssh/known_hosts.{zone}"
    lines = [
        f"# {platform['name']} {level} ({zone}): ssh configuration generated from the inventory by salt",
        f"# copy it to ~/.ssh/config.d/{zone} (and {KNOWN_HOSTS} of {jump_host['name'] if jump_host else 'salt'}",
        f"# to ~/.ssh/known_hosts.{zone}), add 'Include config.d/{zone}' to ~/.ssh/config; then: ssh db2",
    ]
    for entry in sorted(hosts, key=lambda e: (jump_host is None or e["name"] != jump_host["name"], e["name"])):
        if not entry.get("address"):
            continue
        lines += ["", f"Host {entry['name']} {entry['fqdn']}", f"    HostName {entry['address']}"]
        if jump_host and entry["name"] != jump_host["name"]:
            lines.append(f"    ProxyJump {jump_host['name']}")
        lines += [f"    UserKnownHostsFile {known}", "    StrictHostKeyChecking yes"]
    return "\n".join(lines) + "\n"


def jumpbox_pillar(platform, hosts, jump_host, operators):
    """``rolestack:jumpbox`` of the salt host: operators, the ssh_config text, the level, the hosts of known_hosts."""
    members = [e for e in hosts if e.get("address")]
    return {
        "operators": operators,
        "level": platform["level"],
        "ssh_config": ssh_config(platform, members, jump_host),
        "ssh_config_path": SSH_CONFIG,
        "known_hosts_path": KNOWN_HOSTS,
        "hosts": [{"name": e["name"], "fqdn": e["fqdn"], "address": e["address"]} for e in members],
    }


def known_hosts(hosts, mine_keys):
    """
    The known_hosts text: for each host (``{name, fqdn, address}``), a line per public host key it published
    (mine ``ssh.host_keys``: host -> {"ed25519.pub": "ssh-ed25519 AAAA... comment", ...}), as
    ``name,fqdn,address TYPE BASE64``; a host without valid keys yet gets a comment line. Sorted: the same keys
    always give the same text.
    """
    lines = [f"# the platform's ssh host keys, from the salt mine ({KNOWN_HOSTS}); managed by salt"]
    for entry in sorted(hosts, key=lambda e: e["name"]):
        published = (mine_keys or {}).get(entry["name"])
        found = []
        for file_name, text in sorted((published or {}).items() if isinstance(published, dict) else []):
            if not str(file_name).endswith(".pub") or str(file_name).endswith("-cert.pub"):
                continue
            try:
                key_type, blob, _comment = parse_public_key(text)
            except ValueError:
                continue
            found.append(f"{entry['name']},{entry['fqdn']},{entry['address']} {key_type} {blob}")
        lines += sorted(found) or [f"# {entry['name']}: no host key in the mine yet (its next highstate sends them)"]
    return "\n".join(lines) + "\n"
