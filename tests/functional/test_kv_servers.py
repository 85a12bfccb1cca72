"""
The key-value roles with real servers: redis-server and memcached started on 127.0.0.1 and free ports from the
configuration files ``rolestack_kv`` renders out of a host's pillar (the example inventory's, its address set to
127.0.0.1 since the private one does not exist here, the server's data/pid/log paths moved into the test's
directory), asked and flushed through the execution module loaded by salt-factories; the nft ruleset checked with
``nft -c -f`` (never loaded here); the role SLS rendered for a sessions, a memcache and a redis host.
"""

import copy
import json
import shutil
import socket
import subprocess

import pytest
import rolestack_inventory as inv
import rolestack_kv as kv
from salt.exceptions import CommandExecutionError
from saltfactories.utils.functional import Loaders

from tests.support.paths import EXAMPLE_INVENTORY
from tests.support.paths import LOADER_DIRS
from tests.support.services import PrivateService
from tests.support.services import free_port

PASSWORDS = {"sessions_redis_password": "sessions-password-0123456789", "cache_redis_password": "cache-pw-0123456789"}


class RenderedServer(PrivateService):
    """A redis-server or memcached run in the foreground with the configuration the module rendered."""

    def __init__(self, root, kind, config, port):
        self.kind, self.binary = kind, "redis-server" if kind == "redis" else "memcached"
        super().__init__(root, port=port)
        self.config = config

    def prepare(self):
        if self.kind == "redis":
            # the module's file, then this test's own paths (redis keeps the last dir/pidfile/logfile line)
            extra = f'\ndir {self.root}\npidfile {self.root}/redis.pid\nlogfile ""\n'
            (self.root / "redis.conf").write_text(self.config + extra)

    def command(self):
        if self.kind == "redis":
            return [self.binary, str(self.root / "redis.conf")]
        args = []
        for line in self.config.splitlines():
            if line.startswith("-") and not line.startswith("-P"):  # its pid file stays out of /var/run
                option, _, value = line.partition(" ")
                args += [option, value]
        return [self.binary, *args]


def _pillar_of(host, **ports):
    """The example inventory's pillar of ``host``, on 127.0.0.1, with the servers on the given ports."""
    data = inv.load_yaml(EXAMPLE_INVENTORY.read_text())
    data["secrets"].update(PASSWORDS)
    pillar = copy.deepcopy(inv.derive(data)["hosts"][host])
    pillar["host"]["address"] = "127.0.0.1"
    for path, port in ports.items():
        node = pillar
        for key in path.split("__"):
            node = node[key]
        node["port"] = port
    return pillar


@pytest.fixture
def kv_host(salt_factories, tmp_path, test_root):
    """kv_host(host, **ports) -> (loaders with that host's pillar, start(kind, role) -> a started server)."""
    made, started = [], []

    def make(host, **ports):
        tree = tmp_path / f"pillar-{host}"
        tree.mkdir()
        (tree / "top.sls").write_text("base:\n  '*':\n    - rolestack\n")
        (tree / "rolestack.sls").write_text(json.dumps({"rolestack": _pillar_of(host, **ports)}))
        config = {"file_client": "local", "pillar_roots": {"base": [str(tree)]}, "ext_pillar": [], **LOADER_DIRS}
        loaders = Loaders(salt_factories.salt_minion_daemon(host, overrides=config).config.copy())
        made.append(loaders)
        module = loaders.modules.rolestack_kv

        def start(kind, role, port):
            config = module.redis_conf(role) if kind == "redis" else module.memcached_conf(role)
            server = RenderedServer(test_root, kind, config, port).start()
            started.append(server)
            return server

        return module, start

    yield make
    for server in started:
        server.stop()
    for loaders in made:
        loaders.reset_state()


def _raw(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def test_sessions_redis_refuses_unauthenticated_commands_and_serves_the_password(kv_host):
    redis_port, memcached_port = free_port(), free_port()
    module, start = kv_host("sessions1", sessions__redis=redis_port, sessions__memcached=memcached_port)
    start("redis", "sessions", redis_port)
    start("memcached", "sessions", memcached_port)
    assert b"NOAUTH" in _raw(redis_port, b"SET k v\r\n")
    with pytest.raises(kv.RedisError, match="WRONGPASS"):
        kv.RedisClient(redis_port, password="not-the-password-at-all")
    with kv.RedisClient(redis_port, password=PASSWORDS["sessions_redis_password"]) as client:
        assert client.set("session:1", "alice") and client.get("session:1") == b"alice"
        assert client.command("CONFIG", "GET", "protected-mode") == [b"protected-mode", b"yes"]
        assert client.command("CONFIG", "GET", "maxmemory") == [b"maxmemory", str(256 * 2**20).encode()]
        assert client.command("CONFIG", "GET", "maxmemory-policy") == [b"maxmemory-policy", b"volatile-lru"]
        assert client.command("CONFIG", "GET", "save")[1] == b"3600 1 300 100 60 10000"
        assert client.command("CONFIG", "GET", "bind") == [b"bind", b"127.0.0.1"]
    assert module.ping() == {"sessions_redis": True, "sessions_memcached": True}
    info = module.info()
    assert info["sessions_redis"]["tcp_port"] == redis_port
    assert info["sessions_memcached"]["limit_maxbytes"] == 256 * 2**20
    assert module.info(server="sessions_memcached").keys() == {"sessions_memcached"}


def test_a_sessions_host_refuses_to_flush(kv_host):
    redis_port, memcached_port = free_port(), free_port()
    module, start = kv_host("sessions1", sessions__redis=redis_port, sessions__memcached=memcached_port)
    start("redis", "sessions", redis_port)
    start("memcached", "sessions", memcached_port)
    with kv.MemcachedClient(memcached_port) as client:
        assert client.set("session:2", b"bob")
    for role in (None, "memcache", "redis"):
        with pytest.raises(CommandExecutionError, match="sessions role"):
            module.flush(role=role)
    with kv.MemcachedClient(memcached_port) as client:
        assert client.get("session:2") == b"bob"


def test_flush_empties_a_memcache_host(kv_host):
    port = free_port()
    module, start = kv_host("memcache-alpha1", memcache=port)
    start("memcached", "memcache", port)
    with kv.MemcachedClient(port) as client:
        assert client.set("page:1", b"<html>")
        assert client.get("page:1") == b"<html>"
        assert client.stats()["limit_maxbytes"] == 256 * 2**20
    result = module.flush()
    assert result["flushed"] == ["memcache_memcached"]
    assert result["members"] == ["memcache-alpha1", "memcache-alpha2"] and result["cluster"] == "alpha"
    with kv.MemcachedClient(port) as client:
        assert client.get("page:1") is None
    assert module.ping() == {"memcache_memcached": True}


def test_flush_empties_a_redis_cache_host_with_the_pillars_password(kv_host):
    port = free_port()
    module, start = kv_host("redis-beta1", redis=port)
    start("redis", "redis", port)
    with kv.RedisClient(port, password=PASSWORDS["cache_redis_password"]) as client:
        assert client.set("fragment:1", "x")
        assert client.command("CONFIG", "GET", "save") == [b"save", b""]
        assert client.command("CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
    assert module.flush(role="redis")["flushed"] == ["redis_redis"]
    with kv.RedisClient(port, password=PASSWORDS["cache_redis_password"]) as client:
        assert client.get("fragment:1") is None
        assert client.command("DBSIZE") == 0
    with pytest.raises(CommandExecutionError, match="no cache role"):
        module.flush(role="memcache")


def test_a_server_that_is_down_is_reported(kv_host):
    module, _start = kv_host("memcache-alpha1", memcache=free_port())
    assert "cannot connect" in module.ping()["memcache_memcached"]
    with pytest.raises(CommandExecutionError, match="memcache_memcached"):
        module.flush()


@pytest.mark.skipif(
    not shutil.which("nft"),
    reason="nft is not installed (Debian package nftables: tests/bootstrap.sh and the lab need it); not checked",
)
@pytest.mark.parametrize("host", ["sessions1", "memcache-alpha1", "redis-beta1"])
def test_the_rendered_ruleset_is_accepted_by_nft(kv_host, tmp_path, host):
    module, _start = kv_host(host)
    path = tmp_path / "firewall.nft"
    path.write_text(module.firewall_ruleset())
    checked = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)  # -c: nothing loaded
    assert checked.returncode == 0, checked.stderr
    assert module.firewall_check(path=str(path)) is True
    path.write_text(module.firewall_ruleset().replace("tcp dport", "tcp dprt", 1))
    with pytest.raises(CommandExecutionError, match="nft refuses"):
        module.firewall_check(path=str(path))


def test_the_ruleset_follows_the_pillar(kv_host):
    module, _start = kv_host("sessions1")
    text = module.firewall_ruleset()
    assert "tcp dport 6379 ip saddr @redis_allow_v4 accept" in text
    assert "tcp dport 11211 ip saddr @memcached_allow_v4 accept" in text
    assert "elements = { 10.10.10.51/32, 10.10.10.52/32 }" in text
    module, _start = kv_host("salt")  # the jump box: no port guarded (app1 has sshd's, from the salt host only)
    with pytest.raises(CommandExecutionError, match="no rolestack:firewall"):
        module.firewall_ruleset()


# ---- the role SLS, rendered with the pillar the ext_pillar derives from pillar.example ----------------------

ROLE_SLS = {
    "sessions1": (
        "sessions",
        {
            "sessions-redis-config": "/etc/redis/redis.conf",
            "sessions-memcached-config": "/etc/memcached.conf",
            "firewall-ruleset": "/etc/rolestack/firewall.nft",
        },
    ),
    "memcache-alpha2": ("memcache", {"memcache-config": "/etc/memcached.conf"}),
    "redis-beta1": ("redis", {"redis-config": "/etc/redis/redis.conf"}),
}


def _args(high, state_id, module):
    merged = {}
    for arg in high[state_id][module]:
        if isinstance(arg, dict):
            merged.update(arg)
    return merged


@pytest.mark.parametrize("host", list(ROLE_SLS))
def test_role_sls_renders_for_its_host(make_loaders, host):
    sls, files = ROLE_SLS[host]
    loaders = make_loaders(host)
    high = loaders.modules.state.show_sls(sls)
    assert isinstance(high, dict), high
    for state_id, name in files.items():
        assert _args(high, state_id, "file")["name"] == name
    assert {"firewall-pkg", "firewall-ruleset", "firewall-boot", "firewall-load"} <= set(high)
    assert _args(high, "firewall-ruleset", "file")["check_cmd"] == "/usr/sbin/nft -c -f"
    # the ruleset is the pillar's text (rolestack_kv.nft_ruleset in the ext_pillar), no template on the minion
    ruleset = _args(high, "firewall-ruleset", "file")["contents"]
    assert ruleset == loaders.modules.rolestack_kv.firewall_ruleset() and ruleset.startswith("#!/usr/sbin/nft -f\n")
    assert _args(high, "firewall-load", "rolestack_kv")["name"] == "/etc/rolestack/firewall.nft"
    for state_id in files:
        if "redis" in state_id and state_id != "firewall-ruleset":
            assert _args(high, state_id, "file")["show_changes"] is False  # the password never in a diff
            assert _args(high, state_id, "file")["mode"] == "0640"
    services = [sid for sid, body in high.items() if "rolestack_service" in body and sid != "firewall-boot"]
    for sid in services:
        assert _args(high, sid, "rolestack_service")["watch"], sid


@pytest.mark.parametrize(("host", "sls"), [("app1", "sessions"), ("sessions1", "memcache"), ("salt", "firewall")])
def test_role_sls_refuses_a_host_without_the_role(make_loaders, host, sls):
    ret = make_loaders(host).modules.state.show_sls(sls)
    assert isinstance(ret, list) and "applies only" in str(ret), ret


@pytest.mark.parametrize("host", list(ROLE_SLS))
def test_role_sls_dry_run_renders_its_files_through_the_module(make_loaders, host):
    # test=True only: nothing on this machine changes (the files are compared, the services asked)
    sls, files = ROLE_SLS[host]
    ret = make_loaders(host).modules.state.sls(sls, test=True)
    assert not ret.failed, ret.raw
    by_id = {state.id: state for state in ret}
    for state_id in files:
        assert by_id[state_id].result is not False, by_id[state_id]
        assert "Unable to manage file" not in by_id[state_id].comment
    assert "Traceback" not in str(ret.raw)
