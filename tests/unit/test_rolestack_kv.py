"""The key-value util: RESP and memcached parsing, configuration files, the nftables ruleset, flush decisions."""

import contextlib
import socket
import threading

import pytest
import rolestack_inventory as inv
import rolestack_kv as kv

from tests.support.paths import EXAMPLE_INVENTORY

ALLOW = ["10.10.10.51/32", "10.10.10.52/32"]


@pytest.fixture(scope="module")
def hosts():
    return inv.derive(inv.load_yaml(EXAMPLE_INVENTORY.read_text()))["hosts"]


# ---- protocol parsing, against a socket that answers canned bytes ---------------------------------------


@contextlib.contextmanager
def canned(answer):
    """A listener on 127.0.0.1 that reads one request, records it, answers ``answer`` and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    got = []

    def serve():
        conn, _ = server.accept()
        with conn:
            got.append(conn.recv(65536))
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], got
    finally:
        thread.join(5)
        server.close()


def test_resp_command_encodes_bulk_strings():
    assert kv.resp_command("SET", "k", b"v\r\n", 5) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n5\r\n"


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        (b"+PONG\r\n", "PONG"),
        (b":42\r\n", 42),
        (b"$5\r\nab\r\nc\r\n", b"ab\r\nc"),
        (b"$-1\r\n", None),
        (b"*2\r\n$1\r\na\r\n:1\r\n", [b"a", 1]),
    ],
)
def test_redis_replies_are_parsed(answer, want):
    with canned(answer) as (port, got), kv.RedisClient(port, timeout=2) as client:
        assert client.command("X") == want
    assert got == [b"*1\r\n$1\r\nX\r\n"]


def test_redis_error_reply_raises_with_its_text():
    answer = b"-NOAUTH Authentication required.\r\n"
    with canned(answer) as (port, _), kv.RedisClient(port, timeout=2) as client, pytest.raises(kv.RedisError) as err:
        client.ping()
    assert err.value.reply.startswith("NOAUTH")


@pytest.mark.parametrize("answer", [b"?what\r\n", b""])
def test_redis_garbage_or_close_is_an_error(answer):
    with canned(answer) as (port, _), kv.RedisClient(port, timeout=2) as client, pytest.raises(kv.KVError):
        client.ping()


def test_silent_server_times_out():
    server = socket.create_server(("127.0.0.1", 0))
    try:
        with (
            kv.RedisClient(server.getsockname()[1], timeout=0.2) as client,
            pytest.raises(kv.KVError, match="no answer"),
        ):
            client.ping()
    finally:
        server.close()


def test_connection_refused_is_a_kv_error():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    with pytest.raises(kv.KVError, match="cannot connect"):
        kv.RedisClient(port, timeout=1)


def test_redis_info_is_flat_with_numbers():
    info = kv.parse_redis_info("# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:12\r\n\r\n# Memory\r\nx:1.5\r\n")
    assert info == {"redis_version": "7.0.15", "uptime_in_seconds": 12, "x": 1.5}


@pytest.mark.parametrize(
    ("call", "answer", "want", "sent"),
    [
        ("version", b"VERSION 1.6.18\r\n", "1.6.18", b"version\r\n"),
        ("flush_all", b"OK\r\n", True, b"flush_all\r\n"),
        ("stats", b"STAT pid 7\r\nSTAT version 1.6\r\nEND\r\n", {"pid": 7, "version": 1.6}, b"stats\r\n"),
    ],
)
def test_memcached_answers_are_parsed(call, answer, want, sent):
    with canned(answer) as (port, got), kv.MemcachedClient(port, timeout=2) as client:
        assert getattr(client, call)() == want
    assert got == [sent]


def test_memcached_set_and_get_frames():
    with canned(b"STORED\r\n") as (port, got), kv.MemcachedClient(port, timeout=2) as client:
        assert client.set("k", b"v v") is True
    assert got == [b"set k 0 0 3\r\nv v\r\n"]
    with canned(b"VALUE k 0 3\r\nv v\r\nEND\r\n") as (port, got), kv.MemcachedClient(port, timeout=2) as client:
        assert client.get("k") == b"v v"
    with canned(b"END\r\n") as (port, got), kv.MemcachedClient(port, timeout=2) as client:
        assert client.get("k") is None


@pytest.mark.parametrize("answer", [b"ERROR\r\n", b"SERVER_ERROR out of memory\r\n", b"CLIENT_ERROR bad\r\n"])
def test_memcached_errors_raise(answer):
    with canned(answer) as (port, _), kv.MemcachedClient(port, timeout=2) as client, pytest.raises(kv.KVError):
        client.flush_all()


@pytest.mark.parametrize("key", ["with space", "", "k" * 251, "new\nline"])
def test_memcached_keys_are_checked(key):
    with pytest.raises(ValueError):
        kv._memcached_key(key)


# ---- configuration files ---------------------------------------------------------------------------------


def _conf(text):
    """redis.conf directives (first word -> rest), comments left out."""
    return dict(line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_redis_conf_of_the_sessions_store():
    conf = _conf(kv.redis_conf("sessions", ["10.10.10.21", "127.0.0.1"], "p" * 20, 256, "volatile-lru"))
    assert conf["bind"] == "10.10.10.21 127.0.0.1"
    assert conf["protected-mode"] == "yes"
    assert conf["port"] == "6379"
    assert conf["requirepass"] == '"' + "p" * 20 + '"'
    assert (conf["maxmemory"], conf["maxmemory-policy"]) == ("256mb", "volatile-lru")
    assert conf["save"] == "3600 1 300 100 60 10000" and conf["appendonly"] == "no"
    assert conf["daemonize"] == "no"


def test_redis_conf_of_a_cache_keeps_nothing():
    conf = _conf(kv.redis_conf("redis", ["10.10.10.36", "127.0.0.1"], "p" * 20, 512, "allkeys-lru", port=6400))
    assert conf["save"] == '""' and conf["appendonly"] == "no"
    assert (conf["port"], conf["maxmemory"], conf["maxmemory-policy"]) == ("6400", "512mb", "allkeys-lru")


@pytest.mark.parametrize(
    ("role", "password"), [("memcache", "p" * 20), ("sessions", ""), ("sessions", None), ("redis", 12)]
)
def test_redis_conf_refuses_a_wrong_role_or_no_password(role, password):
    with pytest.raises(ValueError):
        kv.redis_conf(role, ["127.0.0.1"], password, 256, "allkeys-lru")


@pytest.mark.parametrize(
    ("password", "quoted"),
    [('a"b\\c d', '"a\\"b\\\\c d"'), ("tab\there", '"tab\\x09here"'), ("é", '"\\xc3\\xa9"')],
)
def test_redis_password_is_quoted(password, quoted):
    assert kv.redis_quote(password) == quoted


def test_memcached_options():
    args = kv.memcached_args("memcache", ["10.10.10.31", "127.0.0.1"], 128)
    assert args == [["-p", "11211"], ["-U", "0"], ["-l", "10.10.10.31,127.0.0.1"], ["-m", "128"], ["-u", "memcache"]]
    text = kv.memcached_conf("sessions", ["10.10.10.21", "127.0.0.1"], 256)
    assert "-l 10.10.10.21,127.0.0.1\n" in text and "-U 0\n" in text and "-m 256\n" in text
    assert "-S" not in text and "sasl" not in text.lower()
    with pytest.raises(ValueError):
        kv.memcached_args("redis", ["127.0.0.1"], 64)


def test_listen_addresses():
    assert kv.listen_addresses("10.10.10.21") == ["10.10.10.21", "127.0.0.1"]
    assert kv.listen_addresses("127.0.0.1") == ["127.0.0.1"]
    with pytest.raises(ValueError, match="no address yet"):
        kv.listen_addresses(None)


# ---- the firewall ----------------------------------------------------------------------------------------

SERVICES = [
    {"name": "redis", "port": 6379, "allow": ALLOW},
    {"name": "memcached", "port": 11211, "allow": ["10.10.10.53/32", "fd00::5/128"]},
]


def test_nft_ruleset_admits_each_port_from_loopback_and_its_allow_list_only():
    text = kv.nft_ruleset(SERVICES)
    lines = [line.strip() for line in text.splitlines()]
    # replaced as a whole, in one transaction, whether the table existed or not
    assert lines[2:5] == ["table inet rolestack", "delete table inet rolestack", "table inet rolestack {"]
    assert "type filter hook input priority filter; policy accept;" in lines
    chain = lines[lines.index("chain input {") + 2 :]
    assert chain[:4] == [
        'tcp dport 6379 iif "lo" accept',
        "tcp dport 6379 ip saddr @redis_allow_v4 accept",
        "tcp dport 6379 drop",
        'tcp dport 11211 iif "lo" accept',
    ]
    assert chain[4:7] == [
        "tcp dport 11211 ip saddr @memcached_allow_v4 accept",
        "tcp dport 11211 ip6 saddr @memcached_allow_v6 accept",
        "tcp dport 11211 drop",
    ]
    assert "elements = { 10.10.10.51/32, 10.10.10.52/32 }" in lines
    assert "elements = { fd00::5/128 }" in lines and "type ipv6_addr" in lines


def test_nft_ruleset_without_allowed_hosts_drops_all_but_loopback():
    text = kv.nft_ruleset([{"name": "redis", "port": 6379, "allow": []}])
    assert "set " not in text and "saddr" not in text
    assert 'tcp dport 6379 iif "lo" accept\n\t\ttcp dport 6379 drop\n' in text


@pytest.mark.parametrize(
    "service", [{"name": "bad name", "port": 1, "allow": []}, {"name": "redis", "port": 0, "allow": []}]
)
def test_nft_ruleset_refuses_bad_services(service):
    with pytest.raises(ValueError):
        kv.nft_ruleset([service])


def test_nft_ruleset_refuses_an_address_that_is_not_one():
    with pytest.raises(ValueError):
        kv.nft_ruleset([{"name": "redis", "port": 6379, "allow": ["10.0.0.1; flush ruleset"]}])


def test_nft_digest_follows_the_content_and_the_live_table_is_compared_by_it():
    wanted = kv.nft_ruleset(SERVICES)
    other = kv.nft_ruleset(SERVICES[:1])
    assert kv.NFT_COMMENT_RE.search(wanted).group(1) != kv.NFT_COMMENT_RE.search(other).group(1)
    assert wanted == kv.nft_ruleset(SERVICES)  # stable: a second run renders the same file
    comment = kv.NFT_COMMENT_RE.search(wanted).group(0)
    live = f"table inet rolestack {{\n\t{comment}\n\tchain input {{\n\t}}\n}}\n"
    assert kv.nft_in_sync(wanted, live)
    assert not kv.nft_in_sync(other, live)
    assert not kv.nft_in_sync(wanted, None)
    assert not kv.nft_in_sync(wanted, "table inet rolestack {\n}\n")


# ---- which servers, which flushes ------------------------------------------------------------------------


def test_local_servers_follow_the_roles(hosts):
    sessions = hosts["sessions1"]
    assert kv.local_servers(sessions["host"]["roles"], sessions) == {
        "sessions_redis": {"kind": "redis", "role": "sessions", "port": 6379, "secret": "sessions_redis_password"},
        "sessions_memcached": {"kind": "memcached", "role": "sessions", "port": 11211, "secret": None},
    }
    redis = hosts["redis-beta1"]
    assert kv.local_servers(["redis"], redis) == {
        "redis_redis": {"kind": "redis", "role": "redis", "port": 6379, "secret": "cache_redis_password"}
    }
    assert list(kv.local_servers(["memcache"], hosts["memcache-alpha1"])) == ["memcache_memcached"]
    assert kv.local_servers(["app"], hosts["app1"]) == {}
    with pytest.raises(kv.KVError, match="rolestack:memcache"):
        kv.local_servers(["memcache"], hosts["app1"])


def test_flush_targets_refuse_sessions_and_pick_the_cache_roles(hosts):
    sessions = hosts["sessions1"]
    with pytest.raises(kv.KVError, match="sessions role"):
        kv.flush_targets(["sessions"], kv.local_servers(["sessions"], sessions))
    with pytest.raises(kv.KVError, match="sessions role"):
        kv.flush_targets(["sessions"], kv.local_servers(["sessions"], sessions), "memcache")
    memcache = hosts["memcache-alpha1"]
    servers = kv.local_servers(["memcache"], memcache)
    assert kv.flush_targets(["memcache"], servers) == ["memcache_memcached"]
    assert kv.flush_targets(["memcache"], servers, "memcache") == ["memcache_memcached"]
    with pytest.raises(kv.KVError, match="no cache role"):
        kv.flush_targets(["memcache"], servers, "redis")
    with pytest.raises(kv.KVError, match="cannot be flushed"):
        kv.flush_targets(["memcache"], servers, "sessions")
    with pytest.raises(kv.KVError, match="no cache role"):
        kv.flush_targets(["app"], {})
    both = {**servers, **kv.local_servers(["redis"], hosts["redis-beta1"])}
    assert kv.flush_targets(["memcache", "redis"], both) == ["memcache_memcached", "redis_redis"]
    assert kv.flush_targets(["memcache", "redis"], both, "redis") == ["redis_redis"]


@pytest.mark.parametrize(
    ("role", "cluster", "error"),
    [
        ("sessions", "default", "never flushed"),
        ("elastic", "main", "not a cache role"),
        ("memcache", "Alpha", "not a cluster name"),
        ("memcache", "*", "not a cluster name"),
        ("memcache", None, "not a cluster name"),
    ],
)
def test_flush_plan_refusals(role, cluster, error):
    with pytest.raises(kv.KVError, match=error):
        kv.flush_plan(role, cluster)


def test_flush_plan_targets_the_cluster_by_pillar():
    assert kv.flush_plan("memcache", "alpha") == {
        "role": "memcache",
        "cluster": "alpha",
        "target": "I@rolestack:memcache:cluster:alpha",
    }


def test_flush_summary():
    plan = kv.flush_plan("memcache", "alpha")
    members = ["memcache-alpha1", "memcache-alpha2", "memcache-alpha3"]
    ok = {"flushed": ["memcache_memcached"], "members": members}
    returns = {
        "memcache-alpha1": {"ret": ok, "retcode": 0},
        "memcache-alpha2": {"ret": "ERROR: memcache_memcached: cannot connect", "retcode": 1},
    }
    summary = kv.flush_summary(plan, returns)
    assert summary["flushed"] == ["memcache-alpha1"] and not summary["ok"]
    assert summary["failed"] == {
        "memcache-alpha2": "memcache_memcached: cannot connect",
        "memcache-alpha3": "a member of memcache cluster alpha that did not answer",
    }
    everyone = {name: {"ret": ok, "retcode": 0} for name in members}
    assert kv.flush_summary(plan, everyone) == {**plan, "flushed": members, "failed": {}, "ok": True}
    assert kv.flush_summary(plan, {})["failed"] == {"(none)": "no minion matched I@rolestack:memcache:cluster:alpha"}
    assert not kv.flush_summary(plan, {"memcache-alpha1": {"ret": None, "out": "no_return"}})["ok"]
