"""
The rolestack inventory's schema: what a valid inventory is (roles, secrets, keys, db settings, names), reading
its YAML without ever quoting a secret, and :func:`validate`, which returns every problem at once, each naming
the key path, the bad value's type and what was expected. Pure logic, no Salt dunders.

``rolestack_inventory`` derives the pillar from a valid inventory and re-exports this util's public names (its
callers use ``rolestack_inventory.validate``, ``load_yaml``, ``InventoryError``...). Unit tests:
tests/unit/test_rolestack_inventory.py (validation), tests/unit/test_secret_errors.py (secrets never quoted).
"""

import ipaddress
import re

import rolestack_jumpbox as jumpbox
import rolestack_mariadb_sql as sql
import yaml

# role -> properties. "cluster": the role takes a cluster name (one cluster per use case);
# "web": the host runs the nutcracker proxy to the session/cache clusters;
# "unique": at most that many hosts may have the role; "needs": roles the host must also have.
ROLES = {
    "salt": {"unique": 1},
    "mail": {},
    "backup": {"unique": 1},
    "db": {},
    "masterdb": {"unique": 1, "needs": ("db",)},
    "sessions": {},
    "memcache": {"cluster": True},
    "redis": {"cluster": True},
    "elastic": {"cluster": True},
    "app": {"web": True},
    "frontend": {"web": True},
    "jobrunner": {"web": True},
}
WEB_ROLES = frozenset(role for role, props in ROLES.items() if props.get("web"))
CLUSTER_ROLES = frozenset(role for role, props in ROLES.items() if props.get("cluster"))
DEFAULT_CLUSTER = "default"

# secret name -> roles whose hosts receive it (and "required": a host with one of these roles needs it).
# rsync_backup_secret: the backup host only, until the backup role defines which hosts use it and how.
# db_admin_password: no state uses it (the db role administers MariaDB over its unix socket as root): accepted
# so that existing inventories stay valid, given to no host.
SECRETS = {
    "sessions_redis_password": {"roles": ("sessions",) + tuple(sorted(WEB_ROLES)), "required": ("sessions",)},
    "cache_redis_password": {"roles": ("redis",) + tuple(sorted(WEB_ROLES)), "required": ("redis",)},
    "replication_password": {"roles": ("db",), "required": ("db",)},
    "db_admin_password": {"roles": (), "required": ()},
    "rsync_backup_secret": {"roles": ("backup",), "required": ("backup",)},
    # the password of elastic.username, needed only by a cluster with security enabled (rolestack_elastic)
    "elastic_snapshot_password": {"roles": ("elastic",), "required": ()},
}
MIN_SECRET_LENGTH = 16


# names /etc/hosts and DNS give to the host carrying each core role
CORE_ROLE_NAMES = ("salt", "mail", "backup", "masterdb")

TOP_KEYS = (
    "name",
    "level",
    "domain",
    "network",
    "hosts",
    "aliases",
    "db",
    "databases",
    "sessions",
    "caches",
    "secrets",
    "rsync",
    "operators",
    "backup",  # the backup role's paths, retention, schedule (validated by rolestack_backup.validate)
    "elastic",  # the elastic role's snapshots (validated by rolestack_elastic.validate)
)
# settings of the db/masterdb roles: (default, minimum, maximum, what it is)
DB_SETTINGS = {
    "semi_sync_timeout_ms": (10000, 100, 3600000, "how long masterdb waits for a replica's acknowledgement"),
    "max_lag_seconds": (30, 1, 86400, "a replica further behind is reported unhealthy"),
    "switchover_max_lag_seconds": (5, 0, 3600, "a switchover refuses a target further behind"),
}
HOST_KEYS = ("roles", "address", "cluster")

# the key-value servers (docs/roles/sessions.md): the ports every sessions/memcache/redis host listens on, and the
# web hosts' proxy (twemproxy) serves the sessions stores on the same ports on 127.0.0.1, its statistics on
# PROXY_STATS_PORT, and each object-cache cluster on the cluster's own ``proxy_port``
REDIS_PORT = 6379
MEMCACHED_PORT = 11211
PROXY_STATS_PORT = 22222
RESERVED_PROXY_PORTS = (REDIS_PORT, MEMCACHED_PORT, PROXY_STATS_PORT)
PROXY_PORT_RANGE = (1024, 65535)
# redis's maxmemory-policy values (redis.conf)
REDIS_POLICIES = (
    "volatile-lru",
    "allkeys-lru",
    "volatile-lfu",
    "allkeys-lfu",
    "volatile-random",
    "allkeys-random",
    "volatile-ttl",
    "noeviction",
)
MEMORY_MB_RANGE = (16, 1048576)
# the sessions role's settings: key -> (default, what it is); a *_mb key is an integer in MEMORY_MB_RANGE, a
# *_policy key one of REDIS_POLICIES
SESSIONS_SETTINGS = {
    "redis_maxmemory_mb": (256, "redis's maxmemory"),
    "redis_maxmemory_policy": ("volatile-lru", "redis's maxmemory-policy"),
    "memcached_memory_mb": (256, "memcached's memory limit (-m)"),
}
# the object-cache clusters, per role: cluster key -> (default, what it is); proxy_port has none (required)
CACHE_SETTINGS = {
    "memcache": {
        "proxy_port": (None, "the web hosts' proxy port of the cluster"),
        "memory_mb": (256, "memcached's memory limit (-m)"),
    },
    "redis": {
        "proxy_port": (None, "the web hosts' proxy port of the cluster"),
        "maxmemory_mb": (256, "redis's maxmemory"),
        "maxmemory_policy": ("allkeys-lru", "redis's maxmemory-policy"),
    },
}
# roles a sessions host may not also have: the same ports, and a flush of the cache would reach the sessions
SESSIONS_EXCLUSIVE = ("memcache", "redis")

# application databases (created on masterdb only; replicas get them by replication) and their accounts:
# one account <user>@<address> per inventory host having one of the user's roles
DATABASE_KEYS = ("character_set", "collate", "users")
DB_USER_KEYS = ("roles", "privileges", "ssl")
DB_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
DB_USER_RE = re.compile(r"^[A-Za-z0-9_]{1,80}$")
CHARSET_RE = re.compile(r"^[a-z0-9_]{1,32}$")
DEFAULT_CHARACTER_SET = "utf8mb4"
# accounts the platform or MariaDB itself owns (compared without case)
BUILTIN_DB_USERS = ("repl", "root", "mysql", "mariadb.sys", "public")
# the secret holding the application accounts' passwords: a mapping of user name to password
DB_USERS_SECRET = "db_users"
# the rsync modules' secrets, one per module (validated with the rsync key: rolestack_rsync.validate)
RSYNC_SECRET = "rsync_modules"
DB_PORT = 3306
LABEL_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
TRAILING_DIGITS_RE = re.compile(r"[0-9]+$")


class InventoryError(Exception):
    """An invalid inventory. ``errors`` holds every message; ``str()`` joins them."""

    def __init__(self, errors, source=None):
        self.errors = list(errors)
        self.source = source
        head = f"invalid rolestack inventory{f' in {source}' if source else ''}"
        super().__init__(head + ":\n  - " + "\n  - ".join(self.errors))


KEY_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")
# a line that opens a secrets section (at the top, or under rolestack:inventory), and what a quoted part of a
# YAML error message looks like (a token, a tag, a character out of the source)
SECRETS_LINE_RE = re.compile(r"""^( *)(['"]?)secrets\2[ \t]*:""")
QUOTED_RE = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"')


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A duplicate mapping key: its problem names the key (a name, never a value) and the first line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (YAML would silently keep the last one)."""


def _construct_unique_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKeyError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {_key(key)!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml(text, source="<inventory>"):
    """
    Parse inventory YAML text, refusing duplicate keys. A file may hold the inventory at its top or under
    a ``rolestack:inventory`` key (so the same file can also be a pillar SLS). Raises InventoryError.
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        # "from None": the YAML error's own text quotes the source line, and a logged traceback would show it
        raise InventoryError([yaml_error_text(err, text)], source) from None
    if isinstance(data, dict) and isinstance(data.get("rolestack"), dict) and "inventory" in data["rolestack"]:
        data = data["rolestack"]["inventory"]
    return data


def _key(key):
    """A mapping key as a key path shows it: the key when it looks like a name, else only what it is."""
    return key if isinstance(key, str) and KEY_NAME_RE.match(key) else f"<{_kind(key)}>"


def _secret_lines(text):
    """Numbers (from 0) of the lines that are, or may be, in a ``secrets`` section: its line and the deeper ones."""
    lines, indent = set(), None
    for number, line in enumerate(text.splitlines()):
        stripped = line.lstrip(" \t")
        if indent is not None:
            if stripped and not stripped.startswith("#") and len(line) - len(stripped) <= indent:
                indent = None
            else:
                lines.add(number)
                continue
        match = SECRETS_LINE_RE.match(line)
        if match:
            indent = len(match.group(1))
            lines.add(number)
    return lines


def yaml_error_text(err, text):
    """
    A YAML error as one line, never quoting the source: line and column, what was wrong. PyYAML's own message
    shows the offending line (a secret when it is under ``secrets``), so it is rebuilt from its parts; when the
    error is, or may be, in a secrets section the quoted parts (tokens, tags, characters) are left out too.
    """
    if not isinstance(err, yaml.MarkedYAMLError):
        return f"YAML: {type(err).__name__}"
    marks = [mark for mark in (err.context_mark, err.problem_mark) if mark is not None]
    secret = not isinstance(err, _DuplicateKeyError) and bool(_secret_lines(text) & {mark.line for mark in marks})
    parts = []
    for what, mark in ((err.context, err.context_mark), (err.problem, err.problem_mark)):
        if not what:
            continue
        what = " ".join(str(what).split())
        if secret:
            what = QUOTED_RE.sub("(...)", what)
        parts.append(f"{what} (line {mark.line + 1}, column {mark.column + 1})" if mark else what)
    return "YAML: " + "; ".join(parts)


def roles_from_name(name):
    """
    Read roles (and a cluster name) from a host name, as the original platform did, but strictly:
    split on ``-``, strip trailing digits of each part; the first part must be a role; a later part is a
    role, or the cluster of the role before it if that role takes one.

    ``db1-masterdb`` -> (["db", "masterdb"], None); ``memcache-alpha1`` -> (["memcache"], "alpha").
    Returns (roles, cluster, error); error is None or a message.
    """
    roles, cluster = [], None
    for index, part in enumerate(name.split("-")):
        word = TRAILING_DIGITS_RE.sub("", part)
        if word in ROLES:
            if word not in roles:
                roles.append(word)
        elif index > 0 and roles and roles[-1] in CLUSTER_ROLES and cluster is None and LABEL_RE.match(word):
            cluster = word
        else:
            return (
                [],
                None,
                (
                    f"{word!r} in the host name is not a role (expected the name to be <role>[N][-<role or "
                    f"cluster>[N]]..., roles: {', '.join(sorted(ROLES))}), or set 'roles' explicitly"
                ),
            )
    return roles, cluster, None


def host_roles(name, spec):
    """(roles, cluster read from the name) of a host of a valid inventory: its ``roles``, or those of its name."""
    roles, name_cluster = (spec or {}).get("roles"), None
    if roles is None:
        roles, name_cluster, _ = roles_from_name(name)
    return list(dict.fromkeys(roles)), name_cluster


def _fmt(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _kind(value):
    """
    What a value is, never what it holds: its type, and its length for a string. For values that may be secrets:
    a secret under ``secrets``, or one put in the wrong place (an unknown key, a mapping's place).
    """
    if isinstance(value, str):
        return f"a str of length {len(value)}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def validate(inventory):
    """
    Validate an inventory mapping. Returns the list of every error found (empty when valid).
    """
    errors = []
    err = errors.append
    if not isinstance(inventory, dict):
        return [f"<top>: got {_kind(inventory)}, expected a mapping with keys {', '.join(TOP_KEYS)}"]

    for key in inventory:
        if key not in TOP_KEYS:
            err(f"{_key(key)}: unknown key (value: {_kind(inventory[key])}), expected one of {', '.join(TOP_KEYS)}")

    name = inventory.get("name", "platform")
    if not isinstance(name, str) or not LABEL_RE.match(name):
        err(f"name: got {_fmt(name)}, expected a lowercase DNS label such as 'webplatform'")
    level = inventory.get("level")
    if not isinstance(level, str) or not LABEL_RE.match(level):
        err(f"level: got {_fmt(level)}, expected a lowercase DNS label such as 'production' or 'staging'")
    domain = inventory.get("domain")
    if not isinstance(domain, str) or not DOMAIN_RE.match(domain):
        err(f"domain: got {_fmt(domain)}, expected a lowercase DNS domain such as 'wpdn' or 'example.net'")

    network = None
    raw_network = inventory.get("network")
    try:
        if not isinstance(raw_network, str):
            raise ValueError
        network = ipaddress.ip_network(raw_network, strict=True)
    except ValueError:
        err(f"network: got {_fmt(raw_network)}, expected a network in CIDR form such as '10.10.10.0/24'")

    hosts = inventory.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        err(f"hosts: got {_kind(hosts)}, expected a non-empty mapping of host name to settings")
        hosts = {}

    seen_addresses = {}
    lowered = {}
    role_members = {role: [] for role in ROLES}
    cluster_hosts = {}  # (role, cluster) -> hosts, for the cluster roles
    for host, spec in hosts.items():
        path = f"hosts.{host}"
        if not isinstance(host, str) or not LABEL_RE.match(host):
            err(f"{path}: host name {_fmt(host)} is not valid, expected a lowercase DNS label (a-z, 0-9, -)")
            continue
        if host.lower() in lowered:
            err(f"{path}: duplicate host name (same as {lowered[host.lower()]!r}), expected unique names")
        lowered[host.lower()] = host
        spec = _check_mapping(path, spec, HOST_KEYS, err)
        if spec is None:
            continue

        roles = spec.get("roles")
        name_cluster = None
        if roles is None:
            roles, name_cluster, name_error = roles_from_name(host)
            if name_error:
                err(f"{path}: roles not set and not readable from the name: {name_error}")
        elif not isinstance(roles, list) or not roles:
            err(f"{path}.roles: got {_fmt(roles)}, expected a non-empty list of roles")
            roles = []
        else:
            for index, role in enumerate(roles):
                if role not in ROLES:
                    err(f"{path}.roles[{index}]: unknown role {_fmt(role)}, expected one of {', '.join(sorted(ROLES))}")
                elif roles.index(role) != index:
                    err(f"{path}.roles[{index}]: role {role!r} listed twice, expected each role once")
            roles = [role for role in roles if role in ROLES]
        for role in dict.fromkeys(roles):
            role_members[role].append(host)
            for needed in ROLES[role].get("needs", ()):
                if needed not in roles:
                    err(
                        f"{path}.roles: got {_fmt(roles)}: role {role!r} needs role {needed!r}, expected both on the same host"
                    )

        cluster = spec.get("cluster", name_cluster)
        if "cluster" in spec:
            if not any(role in CLUSTER_ROLES for role in roles):
                err(
                    f"{path}.cluster: got {_fmt(cluster)} but none of the roles {_fmt(roles)} takes a cluster "
                    f"(expected only with {', '.join(sorted(CLUSTER_ROLES))})"
                )
            elif not isinstance(cluster, str) or not LABEL_RE.match(cluster):
                err(f"{path}.cluster: got {_fmt(cluster)}, expected a lowercase label such as 'alpha'")
        for role in dict.fromkeys(roles):
            if role in CLUSTER_ROLES and isinstance(cluster or DEFAULT_CLUSTER, str):
                cluster_hosts.setdefault((role, cluster or DEFAULT_CLUSTER), []).append(host)
        if "sessions" in roles:
            for other in SESSIONS_EXCLUSIVE:
                if other in roles:
                    err(
                        f"{path}.roles: got {_fmt(roles)}: role 'sessions' with role {other!r} (the same ports, and a "
                        f"cache flush would reach the sessions), expected them on separate hosts"
                    )

        if "address" in spec:
            address = spec["address"]
            try:
                if not isinstance(address, str):
                    raise ValueError
                parsed = ipaddress.ip_address(address)
            except ValueError:
                err(f"{path}.address: got {_fmt(address)}, expected an IP address such as '10.10.10.5'")
                continue
            if network is not None:
                if parsed not in network:
                    err(f"{path}.address: {address} is outside the network {network}, expected an address inside it")
                elif not is_host_address(parsed, network):
                    err(
                        f"{path}.address: {address} is the network or broadcast address of {network}, expected a host address"
                    )
            if parsed in seen_addresses:
                err(
                    f"{path}.address: {address} is already the address of {seen_addresses[parsed]}, expected unique addresses"
                )
            else:
                seen_addresses[parsed] = host

    if not role_members["salt"]:
        err("hosts: no host has the role 'salt', expected exactly one (the salt master and DNS server)")
    for role, props in ROLES.items():
        limit = props.get("unique")
        if limit and len(role_members[role]) > limit:
            err(f"hosts: role {role!r} is on {', '.join(role_members[role])}, expected at most {limit} host")
    if role_members["db"] and not role_members["masterdb"]:
        err(
            f"hosts: db hosts {', '.join(role_members['db'])} have no masterdb, expected exactly one db host with 'masterdb'"
        )

    aliases = _optional_mapping("aliases", inventory.get("aliases"), "DNS name to a list of host names", err)
    for alias, targets in aliases.items():
        path = f"aliases.{alias}"
        if not isinstance(alias, str) or not LABEL_RE.match(alias):
            err(f"{path}: alias {_fmt(alias)} is not valid, expected a lowercase DNS label")
        elif alias in hosts or alias in CORE_ROLE_NAMES:
            err(f"{path}: alias {alias!r} clashes with a host or core name, expected a distinct name")
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets:
            err(f"{path}: got {_fmt(targets)}, expected a non-empty list of host names")
            continue
        for index, target in enumerate(targets):
            if target not in hosts:
                err(f"{path}[{index}]: host {_fmt(target)} is not in hosts, expected the name of an inventory host")

    db_settings = inventory.get("db")
    if db_settings is not None and not isinstance(db_settings, dict):
        err(f"db: got {_kind(db_settings)}, expected a mapping with keys {', '.join(DB_SETTINGS)}")
    for key, value in (db_settings if isinstance(db_settings, dict) else {}).items():
        if key not in DB_SETTINGS:
            err(f"db.{_key(key)}: unknown key (value: {_kind(value)}), expected one of {', '.join(DB_SETTINGS)}")
            continue
        _default, low, high, what = DB_SETTINGS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            err(f"db.{key}: got {_fmt(value)}, expected an integer from {low} to {high} ({what})")

    _validate_sessions(inventory.get("sessions"), err)
    _validate_caches(inventory.get("caches"), cluster_hosts, err)

    secrets = _optional_mapping("secrets", inventory.get("secrets"), "secret name to value", err)
    for secret, value in secrets.items():
        path = f"secrets.{_key(secret)}"
        if secret in (DB_USERS_SECRET, RSYNC_SECRET):
            continue  # checked with the databases, with the rsync key
        if secret not in SECRETS:
            err(
                f"{path}: unknown secret (value: {_kind(value)}), "
                f"expected one of {', '.join(sorted([*SECRETS, DB_USERS_SECRET, RSYNC_SECRET]))}"
            )
        else:
            _check_secret_value(path, value, err)
    for secret, props in SECRETS.items():
        users = sorted({host for role in props["required"] for host in role_members[role]})
        if users and secret not in secrets:
            err(
                f"secrets.{secret}: missing, expected a value because {', '.join(users)} "
                f"{'needs' if len(users) == 1 else 'need'} it"
            )
    _validate_databases(inventory.get("databases"), secrets.get(DB_USERS_SECRET), role_members, err)
    jumpbox.validate_operators(inventory.get("operators"), err)  # the jump box's accounts (rolestack_jumpbox)
    return errors


def _got(value):
    """A bad setting's value and its type, for an error message (never used for a secret)."""
    return f"{_fmt(value)} ({_kind(value)})"


def _check_setting(path, key, value, err):
    """One key-value setting: ``*_mb`` an integer in MEMORY_MB_RANGE, ``*_policy`` one of REDIS_POLICIES."""
    if key.endswith("_policy"):
        if value not in REDIS_POLICIES:
            err(f"{path}: got {_got(value)}, expected one of redis's policies: {', '.join(REDIS_POLICIES)}")
    elif key.endswith("_mb"):
        low, high = MEMORY_MB_RANGE
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            err(f"{path}: got {_got(value)}, expected an integer from {low} to {high} (megabytes)")


def _validate_sessions(sessions, err):
    """The ``sessions`` key: the sessions role's memory limits and redis eviction policy."""
    sessions = _check_mapping("sessions", sessions, tuple(SESSIONS_SETTINGS), err) or {}
    for key, value in sessions.items():
        if key in SESSIONS_SETTINGS:
            _check_setting(f"sessions.{key}", key, value, err)


def _validate_caches(caches, cluster_hosts, err):
    """
    The ``caches`` key: per cache role (memcache, redis) and cluster, its proxy port (unique, 1024-65535, not a
    port the proxy serves the sessions stores or its statistics on) and memory settings; every memcache/redis
    cluster that has a host needs one.
    """
    caches = _check_mapping("caches", caches, tuple(CACHE_SETTINGS), err) or {}
    ports = {}  # port -> the key path that took it first
    low, high = PROXY_PORT_RANGE
    for role, keys in CACHE_SETTINGS.items():
        clusters = _optional_mapping(f"caches.{role}", caches.get(role), "cluster name to settings", err)
        for cluster, spec in clusters.items():
            path = f"caches.{role}.{_key(cluster)}"
            if not isinstance(cluster, str) or not LABEL_RE.match(cluster):
                err(f"{path}: cluster name {_got(cluster)} is not valid, expected a lowercase label such as 'alpha'")
                continue
            spec = _check_mapping(path, spec, tuple(keys), err)
            if spec is None:
                continue
            for key, value in spec.items():
                if key in keys and key != "proxy_port":
                    _check_setting(f"{path}.{key}", key, value, err)
            if "proxy_port" not in spec:
                err(f"{path}.proxy_port: missing, expected an integer from {low} to {high} ({keys['proxy_port'][1]})")
                continue
            port = spec["proxy_port"]
            if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= high:
                err(f"{path}.proxy_port: got {_got(port)}, expected an integer from {low} to {high}")
            elif port in RESERVED_PROXY_PORTS:
                err(
                    f"{path}.proxy_port: got {port} (an int), expected a port other than "
                    f"{', '.join(map(str, RESERVED_PROXY_PORTS))} (the proxy's sessions stores and statistics)"
                )
            elif port in ports:
                err(f"{path}.proxy_port: got {port} (an int), already the port of {ports[port]}, expected unique ports")
            else:
                ports[port] = path
    for (role, cluster), hosts in sorted(cluster_hosts.items()):
        if role not in CACHE_SETTINGS:
            continue
        spec = (caches.get(role) or {}).get(cluster) if isinstance(caches.get(role), dict) else None
        if spec is None:
            err(
                f"caches.{role}.{cluster}: missing, expected a mapping with proxy_port (the web hosts' proxy port of "
                f"the cluster) because {', '.join(hosts)} {'is' if len(hosts) == 1 else 'are'} in cluster {cluster!r}"
            )


def _optional_mapping(path, value, what, err):
    """A mapping of ``what`` that may be left out (None is empty); anything else is an error, then empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        err(f"{path}: got {_kind(value)}, expected a mapping of {what}")
        return {}
    return value


def _check_mapping(path, spec, keys, err):
    """A mapping with only ``keys`` (None counts as empty); returns it, or None when it is not a mapping."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        err(f"{path}: got {_kind(spec)}, expected a mapping with keys {', '.join(keys)} (or nothing)")
        return None
    for key in spec:
        if key not in keys:
            err(f"{path}.{_key(key)}: unknown key (value: {_kind(spec[key])}), expected one of {', '.join(keys)}")
    return spec


def _check_secret_value(path, value, err):
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        # never echo a secret value back
        err(f"{path}: got {_kind(value)}, expected a string of at least {MIN_SECRET_LENGTH} characters")


def _check_list(path, value, allowed, what, err, normalize=str):
    """A non-empty list of distinct items out of ``allowed``; returns the valid items (normalized)."""
    if not isinstance(value, list) or not value:
        err(f"{path}: got {_fmt(value)}, expected a non-empty list of {what}")
        return []
    good = []
    for index, item in enumerate(value):
        name = normalize(item) if isinstance(item, str) else item
        if not isinstance(name, str) or name not in allowed:
            err(f"{path}[{index}]: unknown {what[:-1]} {_fmt(item)}, expected one of {', '.join(sorted(allowed))}")
        elif name in good:
            err(f"{path}[{index}]: {_fmt(item)} listed twice, expected each once")
        else:
            good.append(name)
    return good


def _validate_databases(databases, passwords, role_members, err):
    """The ``databases`` key and ``secrets.db_users``: names, settings, accounts, one password per user."""
    databases = _optional_mapping("databases", databases, "database name to settings", err)
    if databases and not role_members["db"]:
        err(f"databases: {', '.join(map(str, databases))} defined but no host has the role 'db', expected db hosts")
    first_use = {}  # user -> (path, roles, ssl) where it was first seen
    for database, spec in databases.items():
        path = f"databases.{database}"
        if not isinstance(database, str) or not DB_NAME_RE.match(database):
            err(f"{path}: database name {_fmt(database)} is not valid, expected 1-64 characters out of A-Z a-z 0-9 _")
            continue
        if database.lower() in sql.SYSTEM_DATABASES:
            err(f"{path}: {database!r} is a system database, expected an application database name")
            continue
        spec = _check_mapping(path, spec, DATABASE_KEYS, err)
        if spec is None:
            continue
        character_set = spec.get("character_set", DEFAULT_CHARACTER_SET)
        if not isinstance(character_set, str) or not CHARSET_RE.match(character_set):
            err(f"{path}.character_set: got {_fmt(character_set)}, expected a character set name such as 'utf8mb4'")
        elif "collate" in spec:
            collate = spec["collate"]
            if not isinstance(collate, str) or not CHARSET_RE.match(collate):
                err(f"{path}.collate: got {_fmt(collate)}, expected a collation name such as 'utf8mb4_unicode_ci'")
            elif not collate.startswith(character_set + "_"):
                err(
                    f"{path}.collate: {collate!r} is not a collation of the character set {character_set!r}, "
                    f"expected a name starting with '{character_set}_'"
                )
        users = _optional_mapping(f"{path}.users", spec.get("users"), "user name to roles, privileges, ssl", err)
        for user, settings in users.items():
            _validate_db_user(f"{path}.users.{user}", user, settings, first_use, err)

    passwords = _optional_mapping(f"secrets.{DB_USERS_SECRET}", passwords, "user name to password", err)
    for user, value in passwords.items():
        if user not in first_use:
            err(
                f"secrets.{DB_USERS_SECRET}.{_key(user)}: no such user in databases.*.users, "
                f"expected one of {', '.join(sorted(first_use)) or '(none)'}"
            )
        else:
            _check_secret_value(f"secrets.{DB_USERS_SECRET}.{user}", value, err)
    for user, (where, _roles, _ssl) in sorted(first_use.items()):
        if user not in passwords:
            err(f"secrets.{DB_USERS_SECRET}.{user}: missing, expected the password of user {user!r} ({where})")


def _validate_db_user(path, user, settings, first_use, err):
    if not isinstance(user, str) or not DB_USER_RE.match(user):
        err(f"{path}: user name {_fmt(user)} is not valid, expected 1-80 characters out of A-Z a-z 0-9 _")
        return
    if user.lower() in BUILTIN_DB_USERS:
        err(f"{path}: {user!r} is a built-in account ({', '.join(BUILTIN_DB_USERS)}), expected another user name")
        return
    settings = _check_mapping(path, settings, DB_USER_KEYS, err)
    if settings is None:
        return
    roles = _check_list(f"{path}.roles", settings.get("roles"), ROLES, "roles", err)
    _check_list(
        f"{path}.privileges", settings.get("privileges"), sql.DB_PRIVILEGES, "privileges", err, sql.privilege_name
    )
    ssl = settings.get("ssl", True)
    if not isinstance(ssl, bool):
        err(f"{path}.ssl: got {_fmt(ssl)}, expected true (REQUIRE SSL) or false")
    if user not in first_use:
        first_use[user] = (path, sorted(roles), ssl)
        return
    # one account per user and address: the same roles and TLS requirement wherever the user appears
    where, first_roles, first_ssl = first_use[user]
    if sorted(roles) != first_roles:
        err(
            f"{path}.roles: got {_fmt(sorted(roles))} but user {user!r} has roles {_fmt(first_roles)} in {where}, "
            "expected the same roles on every database of a user"
        )
    if ssl != first_ssl:
        err(f"{path}.ssl: got {_fmt(ssl)} but {where}.ssl is {_fmt(first_ssl)}, expected the same for every database")


def is_host_address(parsed, network):
    """Whether an address may be a host's: not the network or broadcast address (a /31 or /32 has neither)."""
    return network.num_addresses <= 2 or parsed not in (network.network_address, network.broadcast_address)
