"""
The key-value servers of the sessions, memcache and redis roles (docs/roles/sessions.md): pure logic and two tiny
clients, no Salt dunders.

- :class:`RedisClient`: RESP over a socket with timeouts (AUTH, PING, INFO, FLUSHALL, SET/GET);
- :class:`MemcachedClient`: memcached's text protocol (version, stats, flush_all, set/get);
- :func:`redis_conf`, :func:`memcached_conf`: the servers' configuration files (Debian's /etc/redis/redis.conf and
  /etc/memcached.conf) from the pillar's settings;
- :func:`nft_ruleset`: the host firewall, one nftables table that admits each service port only from loopback and
  its allow-list;
- :func:`local_servers`, :func:`flush_targets`, :func:`flush_plan`, :func:`flush_summary`: which servers a host
  runs, which of them a flush may empty, and the cache runner's decisions.

The execution module ``rolestack_kv`` reads the pillar and calls these; unit tests: tests/unit/test_rolestack_kv.py.
"""

import hashlib
import ipaddress
import re
import socket

DEFAULT_TIMEOUT = 5.0
REDIS_PORT = 6379
MEMCACHED_PORT = 11211
# the roles whose hosts run key-value servers, the servers each runs (the pillar key holding its settings) and the
# secret holding a redis server's password
SERVER_ROLES = ("sessions", "memcache", "redis")
CACHE_ROLES = ("memcache", "redis")
ROLE_SERVERS = {
    "sessions": {"redis": ("sessions", "redis"), "memcached": ("sessions", "memcached")},
    "memcache": {"memcached": ("memcache",)},
    "redis": {"redis": ("redis",)},
}
REDIS_SECRET = {"sessions": "sessions_redis_password", "redis": "cache_redis_password"}
# where Debian's packages keep their files
REDIS_CONF = "/etc/redis/redis.conf"
MEMCACHED_CONF = "/etc/memcached.conf"
NFT_CONF = "/etc/rolestack/firewall.nft"
NFT_TABLE = ("inet", "rolestack")
LABEL_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")


class KVError(Exception):
    """A server refused a command, answered out of protocol, or could not be reached."""


# ---- redis: RESP ------------------------------------------------------------------------------------------


def resp_command(*args):
    """One command as a RESP array of bulk strings (str arguments sent as UTF-8)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Connection:
    """A socket to 127.0.0.1 (or ``host``) with a timeout on every operation, and a buffered line reader."""

    def __init__(self, host, port, timeout):
        self.where = f"{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as err:
            raise KVError(f"cannot connect to {self.where}: {err}") from None
        self.sock.settimeout(timeout)
        self.buffer = b""

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise KVError(f"{self.where}: cannot send: {err}") from None

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except OSError as err:  # socket.timeout included
            raise KVError(f"{self.where}: no answer: {err or 'timed out'}") from None
        if not chunk:
            raise KVError(f"{self.where}: the server closed the connection")
        self.buffer += chunk

    def line(self):
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def exactly(self, count):
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def close(self):
        self.sock.close()


class RedisError(KVError):
    """An error reply (``-ERR ...``, ``-NOAUTH ...``); ``reply`` holds its text."""

    def __init__(self, where, reply):
        self.reply = reply
        super().__init__(f"{where}: {reply}")


class RedisClient:
    """A minimal redis client: one connection, one command at a time. Use as a context manager."""

    def __init__(self, port=REDIS_PORT, host="127.0.0.1", password=None, timeout=DEFAULT_TIMEOUT):
        self.conn = _Connection(host, port, timeout)
        if password is not None:
            self.command("AUTH", password)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.conn.close()

    def command(self, *args):
        """Send one command, return its reply (str, int, bytes, list or None); an error reply raises RedisError."""
        self.conn.send(resp_command(*args))
        return self._reply()

    def _reply(self):
        line = self.conn.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(self.conn.where, rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            data = self.conn.exactly(length + 2)
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise KVError(f"{self.conn.where}: not a redis reply: {line[:40]!r}")

    def ping(self):
        return self.command("PING") == "PONG"

    def info(self, section=None):
        return parse_redis_info(self.command("INFO", *([section] if section else [])).decode())

    def flushall(self):
        return self.command("FLUSHALL") == "OK"

    def set(self, key, value):
        return self.command("SET", key, value) == "OK"

    def get(self, key):
        return self.command("GET", key)


def parse_redis_info(text):
    """INFO's ``key:value`` lines as a flat dict (integers and floats converted); section headers are skipped."""
    info = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        info[key] = _number(value)
    return info


def _number(value):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


# ---- memcached: text protocol -----------------------------------------------------------------------------

MEMCACHED_KEY_RE = re.compile(rb"^[\x21-\x7e]{1,250}$")


class MemcachedClient:
    """A minimal memcached text-protocol client. Use as a context manager."""

    def __init__(self, port=MEMCACHED_PORT, host="127.0.0.1", timeout=DEFAULT_TIMEOUT):
        self.conn = _Connection(host, port, timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.conn.close()

    def _ask(self, line, data=None):
        self.conn.send(line + b"\r\n" + (data + b"\r\n" if data is not None else b""))
        answer = self.conn.line()
        if answer == b"ERROR" or answer.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
            raise KVError(f"{self.conn.where}: {answer.decode(errors='replace')}")
        return answer

    def version(self):
        answer = self._ask(b"version")
        if not answer.startswith(b"VERSION "):
            raise KVError(f"{self.conn.where}: not a version answer: {answer[:40]!r}")
        return answer[8:].decode()

    def stats(self):
        stats = {}
        answer = self._ask(b"stats")
        while answer != b"END":
            parts = answer.decode(errors="replace").split(" ", 2)
            if parts[0] != "STAT" or len(parts) != 3:
                raise KVError(f"{self.conn.where}: not a stats line: {answer[:40]!r}")
            stats[parts[1]] = _number(parts[2])
            answer = self.conn.line()
        return stats

    def flush_all(self):
        return self._ask(b"flush_all") == b"OK"

    def set(self, key, value, exptime=0):
        key = _memcached_key(key)
        data = value if isinstance(value, bytes) else str(value).encode()
        return self._ask(b"set %s 0 %d %d" % (key, exptime, len(data)), data) == b"STORED"

    def get(self, key):
        answer = self._ask(b"get " + _memcached_key(key))
        if answer == b"END":
            return None
        parts = answer.split(b" ")
        if parts[0] != b"VALUE" or len(parts) < 4:
            raise KVError(f"{self.conn.where}: not a get answer: {answer[:40]!r}")
        data = self.conn.exactly(int(parts[3]) + 2)[:-2]
        if self.conn.line() != b"END":
            raise KVError(f"{self.conn.where}: get answered more than one value")
        return data


def _memcached_key(key):
    key = key if isinstance(key, bytes) else str(key).encode()
    if not MEMCACHED_KEY_RE.match(key):
        raise ValueError(f"a memcached key is 1-250 printable characters without spaces, got {len(key)} bytes")
    return key


# ---- configuration files ----------------------------------------------------------------------------------

# RDB snapshots of the sessions store (seconds, changes): what redis's own defaults were; a cache keeps none
SESSIONS_SAVE = ((3600, 1), (300, 100), (60, 10000))


def redis_quote(value):
    """A redis.conf argument in double quotes (redis reads ``\\\\``, ``\\"`` and ``\\xHH`` escapes there)."""
    out = []
    for char in value:
        if char in '\\"':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return '"' + "".join(out) + '"'


def redis_conf(
    role,
    bind,
    password,
    maxmemory_mb,
    maxmemory_policy,
    port=REDIS_PORT,
    data_dir="/var/lib/redis",
    pidfile="/run/redis/redis-server.pid",
    logfile="/var/log/redis/redis-server.log",
):
    """
    redis.conf of a sessions or redis (object cache) host: bound to ``bind`` (the private address and
    127.0.0.1), protected mode, ``requirepass``, maxmemory and its policy; RDB snapshots for the sessions (they
    survive a restart), no persistence at all for a cache. Never daemonizes (systemd runs it).
    """
    if role not in ("sessions", "redis"):
        raise ValueError(f"redis_conf: role {role!r}, expected 'sessions' or 'redis'")
    if not isinstance(password, str) or not password:
        raise ValueError("redis_conf: a redis server needs its password (requirepass)")
    lines = [
        f"# rolestack: redis of the {role} role (docs/roles/sessions.md); managed by salt, edits are overwritten",
        f"bind {' '.join(bind)}",
        "protected-mode yes",
        f"port {int(port)}",
        "tcp-backlog 511",
        "timeout 0",
        "tcp-keepalive 300",
        "daemonize no",
        f"pidfile {pidfile}",
        "loglevel notice",
        f'logfile "{logfile}"',
        "databases 16",
        f"requirepass {redis_quote(password)}",
        f"maxmemory {int(maxmemory_mb)}mb",
        f"maxmemory-policy {maxmemory_policy}",
        f"dir {data_dir}",
        "dbfilename dump.rdb",
        "appendonly no",
    ]
    if role == "sessions":
        lines.append("save " + " ".join(f"{seconds} {changes}" for seconds, changes in SESSIONS_SAVE))
        lines.append("stop-writes-on-bgsave-error yes")
    else:
        lines.append('save ""')
    return "\n".join(lines) + "\n"


def memcached_args(role, listen, memory_mb, port=MEMCACHED_PORT, user="memcache"):
    """memcached's options: listen on ``listen`` only, TCP only (``-U 0``), ``-m``; no SASL (docs/roles/sessions.md)."""
    if role not in ("sessions", "memcache"):
        raise ValueError(f"memcached_args: role {role!r}, expected 'sessions' or 'memcache'")
    return [["-p", str(int(port))], ["-U", "0"], ["-l", ",".join(listen)], ["-m", str(int(memory_mb))], ["-u", user]]


def memcached_conf(role, listen, memory_mb, port=MEMCACHED_PORT):
    """/etc/memcached.conf (Debian's wrapper reads one option a line) of :func:`memcached_args`."""
    lines = [f"# rolestack: memcached of the {role} role (docs/roles/sessions.md); managed by salt"]
    lines += [" ".join(option) for option in memcached_args(role, listen, memory_mb, port)]
    lines += ["-P /var/run/memcached/memcached.pid", "logfile /var/log/memcached.log"]
    return "\n".join(lines) + "\n"


def listen_addresses(address):
    """Where a server listens: the host's private address and 127.0.0.1 (its proxy-less local checks)."""
    if not address:
        raise ValueError("this host has no address yet (inventory or mine): cannot bind its servers")
    return list(dict.fromkeys([str(ipaddress.ip_address(address)), "127.0.0.1"]))


# ---- the host firewall ------------------------------------------------------------------------------------


def nft_ruleset(services):
    """
    The nftables ruleset of a key-value host: one table ``inet rolestack`` replaced as a whole (declared, deleted,
    defined again: one atomic transaction, whether it existed or not). Its input chain admits each service's TCP
    port from loopback and from the service's allow-list, drops it from anyone else, and accepts everything else
    (policy accept: the table only guards the key-value ports). The table's comment carries the digest of the rest,
    so the live table can be compared with the wanted one (:func:`nft_digest`, :func:`nft_in_sync`).

    ``services``: ``[{"name": "redis", "port": 6379, "allow": ["10.10.10.51/32", ...]}, ...]`` (the pillar's
    ``rolestack:firewall:services``).
    """
    family, table = NFT_TABLE
    sets, rules = [], []
    for service in services:
        name, port = service["name"], int(service["port"])
        if not LABEL_RE.match(name) or not 0 < port < 65536:
            raise ValueError(f"nft_ruleset: service {name!r} port {port!r} is not a label and a port")
        rules.append(f'\t\ttcp dport {port} iif "lo" accept')
        by_family = {4: [], 6: []}
        for block in service["allow"]:
            network = ipaddress.ip_network(block)
            by_family[network.version].append(network)
        for version, networks in by_family.items():
            if not networks:
                continue
            set_name = f"{name}_allow_v{version}"
            elements = ", ".join(str(net) for net in ipaddress.collapse_addresses(networks))
            sets.append(
                f"\tset {set_name} {{\n\t\ttype {'ipv4_addr' if version == 4 else 'ipv6_addr'}\n"
                f"\t\tflags interval\n\t\telements = {{ {elements} }}\n\t}}\n"
            )
            rules.append(f"\t\ttcp dport {port} {'ip' if version == 4 else 'ip6'} saddr @{set_name} accept")
        rules.append(f"\t\ttcp dport {port} drop")
    body = "".join(sets) + (
        "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n" + "\n".join(rules) + "\n\t}\n"
    )
    digest = nft_digest(body)
    return (
        "#!/usr/sbin/nft -f\n"
        "# rolestack: the guarded ports of this host (sshd, key-value; docs/roles/sessions.md); managed by salt\n"
        f"table {family} {table}\n"
        f"delete table {family} {table}\n"
        f"table {family} {table} {{\n"
        f'\tcomment "rolestack {digest}"\n'
        f"{body}"
        "}\n"
    )


def nft_digest(body):
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:32]


NFT_COMMENT_RE = re.compile(r'comment "rolestack (sha256:[0-9a-f]{32})"')


def nft_in_sync(wanted, live_listing):
    """Whether the live table (``nft list table inet rolestack``'s output, None when absent) is the wanted one."""
    want = NFT_COMMENT_RE.search(wanted)
    have = NFT_COMMENT_RE.search(live_listing or "")
    return bool(want and have and want.group(1) == have.group(1))


# ---- which servers, which flushes -------------------------------------------------------------------------


def local_servers(roles, pillar):
    """
    The servers this host runs, from its roles and its ``rolestack`` pillar: ``{name: {"kind", "role", "port",
    "secret"}}`` with name ``<role>_<kind>`` (e.g. ``sessions_redis``, ``memcache_memcached``); ``secret`` is the
    NAME of the secret holding a redis server's password (None for memcached).
    """
    servers = {}
    for role in SERVER_ROLES:
        if role not in roles:
            continue
        for kind, path in ROLE_SERVERS[role].items():
            settings = pillar
            for key in path:
                settings = (settings or {}).get(key)
            if not isinstance(settings, dict):
                raise KVError(f"this host has role {role} but no rolestack:{':'.join(path)} pillar")
            default = REDIS_PORT if kind == "redis" else MEMCACHED_PORT
            servers[f"{role}_{kind}"] = {
                "kind": kind,
                "role": role,
                "port": int(settings.get("port", default)),
                "secret": REDIS_SECRET[role] if kind == "redis" else None,
            }
    return servers


def flush_targets(roles, servers, role=None):
    """
    The servers a flush on this host empties: those of its cache roles (``role`` alone when given). A host with
    the sessions role never flushes (the inventory keeps sessions off cache hosts; this refuses anyway).
    Returns the names of :func:`local_servers`; raises KVError saying why not.
    """
    if "sessions" in roles:
        raise KVError("this host has the sessions role: a flush would log users out, refused (flush cache clusters)")
    if role is not None and role not in CACHE_ROLES:
        raise KVError(f"role {role!r} cannot be flushed, expected one of {', '.join(CACHE_ROLES)}")
    wanted = [role] if role else [r for r in CACHE_ROLES if r in roles]
    if not wanted or any(r not in roles for r in wanted):
        raise KVError(f"this host has no cache role to flush ({role or 'memcache or redis'}), roles: {roles}")
    return [name for name, server in servers.items() if server["role"] in wanted]


def flush_plan(role, cluster):
    """
    What ``salt-run cache.flush <role> <cluster>`` targets: ``{"role", "cluster", "target"}`` with the compound
    target of that cluster's members (the pillar the ext_pillar gives them). Refuses the sessions role and
    anything that is not a cache role or a cluster name (KVError).
    """
    if role == "sessions":
        raise KVError("the sessions role is never flushed (a flush would log every user out)")
    if role not in CACHE_ROLES:
        raise KVError(f"role {role!r} is not a cache role, expected one of {', '.join(CACHE_ROLES)}")
    if not isinstance(cluster, str) or not LABEL_RE.match(cluster):
        raise KVError(f"cluster {cluster!r} is not a cluster name, expected a lowercase label such as 'alpha'")
    return {"role": role, "cluster": cluster, "target": f"I@rolestack:{role}:cluster:{cluster}"}


def flush_summary(plan, returns):
    """
    The runner's verdict from the members' returns (``{minion: {"ret": ..., "retcode": ...}}``, LocalClient's
    full returns): ``flushed`` (minions that emptied their servers), ``failed`` (``{minion: error}``: an error,
    no answer, or a member another member names that did not answer), ``ok`` (everything flushed).
    """
    flushed, failed, named = [], {}, set()
    for minion, ret in sorted(returns.items()):
        value = ret.get("ret") if isinstance(ret, dict) else None
        if not isinstance(ret, dict) or ret.get("retcode", 0) or not isinstance(value, dict):
            failed[minion] = str(value if value is not None else "the minion did not answer").removeprefix("ERROR: ")
            continue
        flushed.append(minion)
        named.update(value.get("members") or [])
    for minion in sorted(named - set(returns)):
        failed[minion] = f"a member of {plan['role']} cluster {plan['cluster']} that did not answer"
    if not returns:
        failed["(none)"] = f"no minion matched {plan['target']}"
    return {**plan, "flushed": flushed, "failed": failed, "ok": not failed}
