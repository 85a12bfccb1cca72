"""
The sessions, memcache and redis roles and the web hosts' proxy in the lab (issue 11):

- a session written through app1's 127.0.0.1:6379 (redis) and 127.0.0.1:11211 (memcached) lands on sessions1;
- the object-cache pools (memcache cluster alpha of two hosts, redis cluster beta) answer on their own ports and
  spread keys over every member;
- a memcache host added to the inventory joins app1's pool after a commit and one highstate of app1;
- a cache member that dies is ejected from its pool (caches: auto_eject_hosts), the pool keeps answering, and the
  member is back after it returns; a cluster flush empties that cluster only, never the sessions.

The security properties (unauthenticated redis refused, the key-value ports closed to hosts without a web role)
are in the hostile battery (test_8_zz_security).
"""

import json
import secrets
import subprocess
import time

import pytest
import yaml
from rolestack_highstate import wait_for

from tests.e2e.conftest import failures
from tests.e2e.test_3_git_pillar import commit
from tests.e2e.test_3_git_pillar import git

WEB = "app1"
SESSIONS = "sessions1"
ALPHA = ["memcache-alpha1", "memcache-alpha2"]
BETA = "redis-beta1"
JOINER = "memcache-alpha2"

# runs in a lab host: memcached text protocol commands to 127.0.0.1:<port>, one reply per command
MEMCACHED = """
import socket, sys
port, commands = int(sys.argv[1]), sys.argv[2:]
with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
    reader = conn.makefile("rb")
    for command in commands:
        conn.sendall(command.encode().decode("unicode_escape").encode() + b"\\r\\n")
        lines = []
        while True:
            line = reader.readline().decode().rstrip("\\r\\n")
            lines.append(line)
            if line in ("END", "STORED", "NOT_STORED", "DELETED", "NOT_FOUND", "OK") or line.startswith(
                ("ERROR", "CLIENT_ERROR", "SERVER_ERROR", "VERSION")
            ):
                break
        print("|".join(lines))
"""


def inventory(lab):
    return yaml.safe_load((lab.pillar_repo / "inventory.yaml").read_text())


def redis(lab, host, port, password, *args, check=True):
    proc = lab.sh(host, "redis-cli", "-h", "127.0.0.1", "-p", str(port), "-a", password, "--no-auth-warning",
                  *args, check=check)  # fmt: skip
    return proc.stdout.strip()


def memcached(lab, host, port, *commands):
    return lab.sh(host, "python3", "-c", MEMCACHED, str(port), *commands).stdout.splitlines()


def proxy_port(lab, role, cluster):
    return inventory(lab)["caches"][role][cluster]["proxy_port"]


def pool_servers(lab, pool):
    """The server names of ``pool`` in app1's running proxy, from its stats port (twemproxy.stats)."""
    stats = lab.salt(WEB, "twemproxy.stats")[WEB]
    assert isinstance(stats, dict), stats
    return sorted(stats["pools"][pool]["servers"])


def test_a_session_written_through_the_proxy_lands_on_sessions1(lab):
    password = inventory(lab)["secrets"]["sessions_redis_password"]
    key, value = f"e2e-session-{secrets.token_hex(4)}", secrets.token_hex(8)
    assert redis(lab, WEB, 6379, password, "SET", key, value) == "OK"
    assert redis(lab, SESSIONS, 6379, password, "GET", key) == value
    # the proxy asks its clients for the password too: no unauthenticated session access on a web host either
    assert "NOAUTH" in lab.sh(WEB, "redis-cli", "-h", "127.0.0.1", "-p", "6379", "GET", key, check=False).stdout

    mkey = f"e2e-msession-{secrets.token_hex(4)}"
    assert memcached(lab, WEB, 11211, f"set {mkey} 0 0 {len(value)}\\r\\n{value}") == ["STORED"]
    assert memcached(lab, SESSIONS, 11211, f"get {mkey}") == [f"VALUE {mkey} 0 {len(value)}|{value}|END"]


def test_the_cache_pools_spread_keys_over_every_member(lab):
    port = proxy_port(lab, "memcache", "alpha")
    keys = [f"e2e-alpha-{secrets.token_hex(3)}-{n}" for n in range(40)]
    assert memcached(lab, WEB, port, *[f"set {key} 0 0 1\\r\\nx" for key in keys]) == ["STORED"] * len(keys)
    held = {host: sum(1 for line in memcached(lab, host, 11211, *[f"get {k}" for k in keys]) if line != "END")
            for host in ALPHA}  # fmt: skip
    assert sum(held.values()) == len(keys) and all(held.values()), held
    # nothing of the cache cluster on the sessions host
    assert memcached(lab, SESSIONS, 11211, f"get {keys[0]}") == ["END"]

    password = inventory(lab)["secrets"]["cache_redis_password"]
    beta = proxy_port(lab, "redis", "beta")
    assert redis(lab, WEB, beta, password, "SET", "e2e-beta", "1") == "OK"
    assert redis(lab, BETA, 6379, password, "GET", "e2e-beta") == "1"


def test_a_memcache_host_added_to_the_inventory_joins_the_pool(lab):
    pool = "memcache_alpha"
    assert pool_servers(lab, pool) == ALPHA
    left = {}
    commit(lab, lambda data: left.update(data["hosts"].pop(JOINER) or {}) or None, f"{JOINER} leaves")
    try:
        result = lab.highstate(WEB)
        assert result["clean"], failures(result)
        assert pool_servers(lab, pool) == [h for h in ALPHA if h != JOINER]
    finally:
        git(lab, "revert", "--no-edit", "HEAD")
    # the operator's commit adds the host back: one highstate of the web host, and the pool serves it
    started = time.monotonic()
    result = lab.highstate(WEB)
    assert result["clean"], failures(result)
    assert pool_servers(lab, pool) == ALPHA, f"after {time.monotonic() - started:.1f} s"
    port = proxy_port(lab, "memcache", "alpha")
    keys = [f"e2e-join-{secrets.token_hex(3)}-{n}" for n in range(40)]
    memcached(lab, WEB, port, *[f"set {key} 0 0 1\\r\\ny" for key in keys])
    on_joiner = [line for line in memcached(lab, JOINER, 11211, *[f"get {k}" for k in keys]) if line != "END"]
    assert on_joiner, f"no key of 40 landed on {JOINER}"


def test_a_dead_cache_member_is_ejected_and_comes_back(lab):
    pool, victim = "memcache_alpha", ALPHA[0]
    port = proxy_port(lab, "memcache", "alpha")
    lab.sh(victim, "systemctl", "stop", "memcached")
    try:
        # requests that hash to the dead member fail until the proxy ejects it (server_failure_limit), then rehash
        deadline = time.monotonic() + 60
        while True:
            replies = memcached(lab, WEB, port, *[f"set e2e-eject-{n} 0 0 1\\r\\nz" for n in range(20)])
            if replies == ["STORED"] * 20:
                break
            assert time.monotonic() < deadline, f"the pool still fails with {victim} down: {replies}"
            time.sleep(1)
        health = lab.salt(WEB, "twemproxy.health")[WEB]
        assert victim in json.dumps(health.get("ejected", health)), health
    finally:
        lab.sh(victim, "systemctl", "start", "memcached")
    # systemctl returns once memcached is forked, before it listens: count holders only once it answers
    wait_answering(lab, victim)
    deadline = time.monotonic() + 120  # server_retry_timeout: the proxy tries the member again
    while victim not in json.dumps(memcached_holders(lab, port)):
        assert time.monotonic() < deadline, f"{victim} never came back into {pool}"
        time.sleep(2)


def wait_answering(lab, host, timeout=30):
    wait_for(
        lambda: lab.sh(host, "python3", "-c", MEMCACHED, "11211", "version", check=False).returncode == 0,
        timeout,
        f"memcached on {host} to answer after its start",
    )


def memcached_holders(lab, port):
    keys = [f"e2e-back-{secrets.token_hex(3)}-{n}" for n in range(40)]
    memcached(lab, WEB, port, *[f"set {key} 0 0 1\\r\\nb" for key in keys])
    return [
        host
        for host in ALPHA
        if any(line != "END" for line in memcached(lab, host, 11211, *[f"get {k}" for k in keys]))
    ]


def test_a_cluster_flush_empties_that_cluster_and_never_the_sessions(lab):
    password = inventory(lab)["secrets"]["sessions_redis_password"]
    key = f"e2e-kept-{secrets.token_hex(4)}"
    assert redis(lab, WEB, 6379, password, "SET", key, "kept") == "OK"
    memcached(lab, WEB, 11211, f"set {key} 0 0 4\\r\\nkept")
    port = proxy_port(lab, "memcache", "alpha")
    memcached(lab, WEB, port, *[f"set e2e-flush-{n} 0 0 1\\r\\nf" for n in range(20)])
    ret = lab.salt_run("cache.flush", "memcache", "alpha")
    assert sorted(ret["flushed"]) == ALPHA, ret
    for host in ALPHA:
        assert set(memcached(lab, host, 11211, *[f"get e2e-flush-{n}" for n in range(20)])) == {"END"}, host
    assert redis(lab, SESSIONS, 6379, password, "GET", key) == "kept"
    assert memcached(lab, SESSIONS, 11211, f"get {key}") == [f"VALUE {key} 0 4|kept|END"]
    with pytest.raises(AssertionError):
        lab.salt_run("cache.flush", "sessions", "default")


@pytest.fixture(autouse=True)
def _clean_tree_after(lab):
    yield
    status = subprocess.run(["git", "-C", str(lab.pillar_repo), "status", "--porcelain"], capture_output=True,
                            text=True)  # fmt: skip
    assert status.stdout == ""
