"""
twemproxy (nutcracker) on the web hosts: the pure logic of ``_modules/twemproxy.py`` and ``_states/twemproxy.py``.

From the derived pillar ``rolestack:proxy`` (docs/roles/sessions.md, "Proxy (twemproxy)") and the secrets it names:
``validate`` (every problem at once, each naming the key path, the value's type and what was expected; never a
secret's value), ``pools`` / ``render`` (the nutcracker YAML: one pool per entry, listening on 127.0.0.1), the
service's options (``daemon_opts``: the stats port on 127.0.0.1 only), ``nutcracker -t``'s verdict, and the stats
port: ``read_stats`` (the JSON it prints), ``parse_stats`` (per pool and per server), ``health``. No Salt dunders.
"""

import contextlib
import difflib
import grp
import ipaddress
import json
import os
import pwd
import re
import socket
import stat
import tempfile

import yaml

CONFIG_PATH = "/etc/nutcracker/nutcracker.yml"
# Debian's nutcracker.service runs `/usr/sbin/nutcracker $DAEMON_OPTS` with this file as its EnvironmentFile; without
# options the stats port listens on 0.0.0.0:22222 and is aggregated every 30 s
DEFAULTS_PATH = "/etc/default/nutcracker"
LISTEN_ADDRESS = "127.0.0.1"
STATS_ADDRESS = "127.0.0.1"
DEFAULT_STATS_PORT = 22222
# how often nutcracker aggregates the figures the stats port shows (its default, 30 s, would leave `health` a
# half-minute behind an ejection)
STATS_INTERVAL_MS = 2000
# nutcracker's log level: 4 (LOG_WARN) keeps its errors and warnings (log_error is level 1, log_warn 4). Its default,
# 5 (LOG_NOTICE), prints nothing more in a release build (the notice messages are debug-build only), but at 5 every
# request pays for a log line that is then never written: two clock reads, a getpeername(2) syscall and a
# getnameinfo/snprintf of the client's address (req_log, msg_get): 6-12 % of the proxy's CPU per request measured
LOG_LEVEL = 4
# murmur, not the fnv1a_64 of nutcracker's examples: nutcracker keeps 32 bits of fnv1a_64, and keys that differ in
# their last characters (user:1, user:2...) then hash to neighbouring points of the ketama ring, one server
HASH = "murmur"
DISTRIBUTION = "ketama"

ROLES = ("sessions", "memcache", "redis")
KINDS = ("redis", "memcached")
POOL_KEYS = ("name", "role", "kind", "port", "servers", "auth")
SERVER_KEYS = ("name", "address", "port")
POOL_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

# Pool tuning per pool role, not in the pillar (one place to change it, documented in docs/roles/sessions.md).
#
# Sessions: ketama maps each session id to one server; ejecting a dead server moves its keys to the others, so a
# user whose session lived there is silently logged out (a new, empty session elsewhere), and when the server comes
# back its old keys are stale. We prefer a visible failure: auto_eject_hosts is false, so requests for a dead
# sessions server fail (the application shows an error) until it returns, with the sessions it kept in memory;
# the timeout stays short so a dead server fails requests quickly instead of holding PHP workers. With ejection
# off, server_failure_limit and server_retry_timeout only matter if someone turns it on.
# Caches (memcache / redis roles): a miss is cheap and expected, a stall is not; a server failing twice in a row
# is ejected for 30 s (its keys re-hash to the others, which fill from the database), then retried.
# preconnect: connect to every server at start, so the first requests do not pay the connection setup (and a dead
# server shows in the stats at once).
SESSIONS_TUNING = {
    "timeout": 500,
    "server_failure_limit": 3,
    "server_retry_timeout": 30000,
    "auto_eject_hosts": False,
    "preconnect": True,
}
CACHE_TUNING = {
    "timeout": 250,
    "server_failure_limit": 2,
    "server_retry_timeout": 30000,
    "auto_eject_hosts": True,
    "preconnect": True,
}
TUNING = {"sessions": SESSIONS_TUNING, "memcache": CACHE_TUNING, "redis": CACHE_TUNING}
PATH = "rolestack:proxy"


class ProxyConfigError(ValueError):
    """An invalid proxy pillar: ``errors`` holds every problem; ``str()`` joins them."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__(f"invalid {PATH} pillar:\n  - " + "\n  - ".join(self.errors))


def _kind(value):
    """What a value is, never what it holds (it may be a secret)."""
    if isinstance(value, str):
        return f"a str of length {len(value)}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _port_ok(value):
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _validate_server(path, server, err):
    if not isinstance(server, dict):
        err(f"{path}: got {_kind(server)}, expected a mapping with keys {', '.join(SERVER_KEYS)}")
        return
    for key in sorted(set(server) - set(SERVER_KEYS)):
        err(f"{path}:{key}: unknown key (value: {_kind(server[key])}), expected one of {', '.join(SERVER_KEYS)}")
    name = server.get("name")
    if not isinstance(name, str) or not SERVER_NAME_RE.match(name):
        err(f"{path}:name: got {_kind(name)}, expected a host name (letters, digits, '.', '_', '-')")
    address = server.get("address")
    try:
        if not isinstance(address, str):
            raise ValueError
        ipaddress.ip_address(address)
    except ValueError:
        err(f"{path}:address: got {_kind(address)}, expected an IP address such as '10.10.10.21'")
    if not _port_ok(server.get("port")):
        err(f"{path}:port: got {_kind(server.get('port'))}, expected a port number 1..65535")


def _validate_pool(path, pool, secrets, err):
    if not isinstance(pool, dict):
        err(f"{path}: got {_kind(pool)}, expected a mapping with keys {', '.join(POOL_KEYS)}")
        return
    for key in sorted(set(pool) - set(POOL_KEYS)):
        err(f"{path}:{key}: unknown key (value: {_kind(pool[key])}), expected one of {', '.join(POOL_KEYS)}")
    for key in sorted(set(POOL_KEYS) - set(pool)):
        err(f"{path}:{key}: missing, expected it in every pool")
    name = pool.get("name")
    if "name" in pool and (not isinstance(name, str) or not POOL_NAME_RE.match(name)):
        err(f"{path}:name: got {_kind(name)}, expected a pool name such as 'sessions_redis' (a-z, 0-9, _)")
    if "role" in pool and pool["role"] not in ROLES:
        err(f"{path}:role: got {_kind(pool['role'])}, expected one of {', '.join(ROLES)}")
    kind = pool.get("kind")
    if "kind" in pool and kind not in KINDS:
        err(f"{path}:kind: got {_kind(kind)}, expected one of {', '.join(KINDS)}")
    if "port" in pool and not _port_ok(pool["port"]):
        err(f"{path}:port: got {_kind(pool['port'])}, expected a port number 1..65535")
    servers = pool.get("servers")
    if "servers" in pool:
        if not isinstance(servers, list) or not servers:
            err(f"{path}:servers: got {_kind(servers)}, expected a non-empty list of servers")
        else:
            for index, server in enumerate(servers):
                _validate_server(f"{path}:servers:{index}", server, err)
            names = [s.get("name") for s in servers if isinstance(s, dict)]
            for dup in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1}):
                err(f"{path}:servers: server name {dup!r} listed twice, expected unique names")
    if "auth" in pool:
        auth = pool["auth"]
        if kind == "memcached" and auth is not None:
            err(f"{path}:auth: got {_kind(auth)}, expected null (memcached pools have no password)")
        elif kind == "redis":
            if not isinstance(auth, str) or not auth:
                err(f"{path}:auth: got {_kind(auth)}, expected the name of a secret in rolestack:secrets")
            elif auth not in secrets:
                err(f"{path}:auth: the secret {auth!r} is not in rolestack:secrets, expected this host to receive it")
            elif not isinstance(secrets[auth], str) or not secrets[auth] or any(c in secrets[auth] for c in "\r\n"):
                err(f"rolestack:secrets:{auth}: got {_kind(secrets[auth])}, expected a non-empty one-line password")


def validate(proxy, secrets=None):
    """Every problem of the ``rolestack:proxy`` pillar (and of the secrets its redis pools name), as messages."""
    problems = []
    err = problems.append
    if secrets is None:
        secrets = {}
    if not isinstance(secrets, dict):
        err(f"rolestack:secrets: got {_kind(secrets)}, expected a mapping of secret name to value")
        secrets = {}
    if not isinstance(proxy, dict):
        return [f"{PATH}: got {_kind(proxy)}, expected a mapping with keys stats_port, pools"]
    for key in sorted(set(proxy) - {"stats_port", "pools"}):
        err(f"{PATH}:{key}: unknown key (value: {_kind(proxy[key])}), expected one of stats_port, pools")
    stats_port = proxy.get("stats_port", DEFAULT_STATS_PORT)
    if not _port_ok(stats_port):
        err(f"{PATH}:stats_port: got {_kind(stats_port)}, expected a port number 1..65535")
    pools = proxy.get("pools")
    if not isinstance(pools, list):
        err(f"{PATH}:pools: got {_kind(pools)}, expected a list of pools")
        return problems
    for index, pool in enumerate(pools):
        _validate_pool(f"{PATH}:pools:{index}", pool, secrets, err)
    used = {}
    for index, pool in enumerate(pools):
        if not isinstance(pool, dict):
            continue
        for key, owner in (("name", "pool name"), ("port", "port")):
            value = pool.get(key)
            if isinstance(value, (str, int)) and value in used.setdefault(key, {}):
                err(f"{PATH}:pools:{index}:{key}: {owner} {value!r} already used by pools:{used[key][value]}, "
                    "expected unique values")  # fmt: skip
            used[key].setdefault(value, index)
        if pool.get("port") == stats_port:
            err(f"{PATH}:pools:{index}:port: {stats_port} is the stats port, expected another port")
    return problems


def tuning(role):
    """The tuning of a pool of that role (a copy)."""
    return dict(TUNING[role])


def pools(proxy, secrets=None):
    """The nutcracker configuration as a mapping (pool name -> settings); raises ProxyConfigError."""
    secrets = secrets or {}
    problems = validate(proxy, secrets)
    if problems:
        raise ProxyConfigError(problems)
    config = {}
    for pool in proxy["pools"]:
        settings = {"listen": f"{LISTEN_ADDRESS}:{pool['port']}", "hash": HASH, "distribution": DISTRIBUTION}
        if pool["kind"] == "redis":
            settings["redis"] = True
            settings["redis_auth"] = secrets[pool["auth"]]
        settings.update(tuning(pool["role"]))
        settings["servers"] = [f"{s['address']}:{s['port']}:1 {s['name']}" for s in pool["servers"]]
        config[pool["name"]] = settings
    return config


def render(proxy, secrets=None):
    """The text of nutcracker.yml for this pillar; raises ProxyConfigError."""
    body = yaml.safe_dump(pools(proxy, secrets), sort_keys=False, default_flow_style=False, width=1000)
    return "# managed by Salt (rolestack twemproxy, docs/roles/sessions.md): local edits are replaced\n" + body


def stats_port(proxy):
    port = (proxy or {}).get("stats_port", DEFAULT_STATS_PORT) if isinstance(proxy, dict) else DEFAULT_STATS_PORT
    return port if _port_ok(port) else DEFAULT_STATS_PORT


def daemon_opts(port=DEFAULT_STATS_PORT, conf=CONFIG_PATH):
    """The options of Debian's nutcracker service: our config, the stats port on 127.0.0.1 only, the log level."""
    return (
        f"--conf-file={conf} --stats-addr={STATS_ADDRESS} --stats-port={port} --stats-interval={STATS_INTERVAL_MS} "
        f"--verbose={LOG_LEVEL}"
    )


def render_defaults(port=DEFAULT_STATS_PORT, conf=CONFIG_PATH):
    """The text of /etc/default/nutcracker."""
    return (
        "# managed by Salt (rolestack twemproxy): the stats port listens on 127.0.0.1 only\n"
        f'DAEMON_OPTS="{daemon_opts(port, conf)}"\n'
    )


def check_command(path, binary="nutcracker"):
    return [binary, "--test-conf", f"--conf-file={path}"]


def verdict(returncode, stdout, stderr):
    """(valid, nutcracker's own words) of a `nutcracker -t` run."""
    words = " ".join(line.strip() for line in f"{stdout or ''}\n{stderr or ''}".splitlines() if line.strip())
    return returncode == 0 and "syntax is ok" in words, words or f"nutcracker -t exited with {returncode}"


def read_stats(port=DEFAULT_STATS_PORT, host=STATS_ADDRESS, timeout=2.0):
    """The stats port's JSON (nutcracker writes it and closes the connection); raises OSError or ValueError."""
    chunks = []
    with contextlib.closing(socket.create_connection((host, port), timeout=timeout)) as sock:
        sock.settimeout(timeout)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks).decode())


POOL_FIGURES = ("client_connections", "client_eof", "client_err", "server_ejects", "forward_error", "fragments")
SERVER_FIGURES = ("server_connections", "server_eof", "server_err", "server_timedout", "server_ejected_at",
                  "requests", "responses")  # fmt: skip


def parse_stats(raw):
    """The stats port's JSON (a mapping or its text) as {uptime, timestamp, ..., pools: {pool: {..., servers}}}."""
    data = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    if not isinstance(data, dict):
        raise ValueError(f"nutcracker stats: got {_kind(data)}, expected a JSON object")
    report = {key: data.get(key) for key in ("version", "uptime", "timestamp", "total_connections", "curr_connections")}
    report["pools"] = {}
    for pool, figures in data.items():
        if not isinstance(figures, dict):
            continue
        entry = {key: figures.get(key, 0) for key in POOL_FIGURES}
        entry["servers"] = {
            server: {key: values.get(key, 0) for key in SERVER_FIGURES}
            for server, values in figures.items()
            if isinstance(values, dict)
        }
        report["pools"][pool] = entry
    return report


def _ejected(server, timestamp, retry_ms):
    """Ejected now: ejected (server_ejected_at, µs) less than server_retry_timeout before the stats' timestamp."""
    at = server.get("server_ejected_at") or 0
    return bool(at) and timestamp is not None and timestamp * 1_000_000 - at < retry_ms * 1000


def health(report, proxy, reachable=None):
    """
    Per pool of the pillar: servers up / ejected / unreachable, errors, and whether the pool is healthy.
    ``report`` is parse_stats' result; ``reachable`` maps (pool, server) to whether a TCP connection succeeded (None:
    not probed). A server is "ejected" when nutcracker ejected it less than server_retry_timeout ago, "down" when
    not ejected but unreachable, else "up"; a pool is healthy when every server is up.
    """
    reachable = reachable or {}
    result = {"healthy": True, "pools": {}}
    for pool in proxy.get("pools", []):
        name, retry = pool["name"], tuning(pool["role"])["server_retry_timeout"]
        figures = report["pools"].get(name)
        entry = {"port": pool["port"], "role": pool["role"], "kind": pool["kind"], "servers": {}}
        if figures is None:
            entry.update(healthy=False, problem="the pool is not in nutcracker's stats (running an older config?)")
            result["pools"][name] = entry
            result["healthy"] = False
            continue
        for server in pool["servers"]:
            stats = figures["servers"].get(server["name"], {})
            ejected = _ejected(stats, report.get("timestamp"), retry)
            up = reachable.get((name, server["name"]))
            state = "ejected" if ejected else ("down" if up is False else "up")
            errors = sum(stats.get(key, 0) for key in ("server_err", "server_eof", "server_timedout"))
            entry["servers"][server["name"]] = {
                "state": state,
                "address": f"{server['address']}:{server['port']}",
                "reachable": up,
                "connections": stats.get("server_connections", 0),
                "errors": errors,
                "ejected_at": stats.get("server_ejected_at", 0),
            }
        states = [s["state"] for s in entry["servers"].values()]
        entry.update(
            healthy=all(state == "up" for state in states),
            servers_up=states.count("up"),
            servers_ejected=sorted(n for n, s in entry["servers"].items() if s["state"] == "ejected"),
            servers_down=sorted(n for n, s in entry["servers"].items() if s["state"] == "down"),
            errors=sum(s["errors"] for s in entry["servers"].values()),
            client_errors=figures["client_err"],
            forward_errors=figures["forward_error"],
            server_ejects=figures["server_ejects"],
        )
        result["healthy"] = result["healthy"] and entry["healthy"]
        result["pools"][name] = entry
    return result


def probe(address, port, timeout=0.5):
    """Whether a TCP connection to address:port succeeds."""
    try:
        with contextlib.closing(socket.create_connection((address, port), timeout=timeout)):
            return True
    except OSError:
        return False


# the state's file handling: the diff without passwords, the file's facts, a private candidate beside the live file

REDIS_AUTH_RE = re.compile(r"^(\s*redis_auth:\s*).*$", re.MULTILINE)


def redact(text):
    """The config text with every redis_auth value replaced (for diffs, logs and returns)."""
    return REDIS_AUTH_RE.sub(r"\1<redacted>", text or "")


def changed_auth(old, new):
    """The pools whose redis_auth differs between two config texts (every redis pool of ``new`` when ``old``
    does not parse)."""
    try:
        before = yaml.safe_load(old or "") or {}
        if not isinstance(before, dict):
            before = {}
    except yaml.YAMLError:
        before = {}
    try:
        after = yaml.safe_load(new) or {}
    except yaml.YAMLError:
        return []
    if not isinstance(after, dict):
        return []
    return sorted(
        name
        for name, settings in after.items()
        if isinstance(settings, dict)
        and "redis_auth" in settings
        and not (isinstance(before.get(name), dict) and before[name].get("redis_auth") == settings["redis_auth"])
    )


def diff(old, new, path):
    """A unified diff of two config texts, passwords redacted."""
    lines = difflib.unified_diff(
        redact(old).splitlines(keepends=True),
        redact(new).splitlines(keepends=True),
        fromfile=path if old is not None else "/dev/null",
        tofile=path,
    )
    return "".join(lines)


def file_facts(path):
    """(text or None, mode, user, group) of a file; (None, None, None, None) when it does not exist."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None, None, None, None
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    return text, stat.S_IMODE(info.st_mode), _user(info.st_uid), _group(info.st_gid)


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def write_candidate(path, text, user, group, mode):
    """
    Write ``text`` to a new temporary file beside ``path`` (same directory: the replace is atomic), owned and
    moded before any byte is written (it holds passwords); returns its path. Raises KeyError for an unknown
    user/group, OSError.
    """
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    fd, candidate = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or ".")
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(candidate)
        raise
    return candidate
