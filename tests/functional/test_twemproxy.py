"""
twemproxy against real daemons: a private redis-server (requirepass) and memcached servers on 127.0.0.1, a real
nutcracker running the configuration our util renders for a pillar pointing at them, and our module and state
through salt-factories loaders of a masterless minion whose pillar holds that ``rolestack:proxy`` and the secret.

- through the proxy a redis SET with AUTH lands on the backend, one without AUTH is refused;
- a memcached set through the proxy lands on the server;
- at the service's log level (``--verbose=4``) nutcracker still logs its errors;
- the module's stats and health report the pools and servers; killing one server of a cache pool (auto_eject) makes
  health report it ejected while its keys move to the other server;
- the state writes a config nutcracker accepts (0640 root:nutcracker), then refuses one nutcracker rejects, naming
  nutcracker's message, leaving the running config untouched and the proxy serving.
"""

import grp
import os
import stat

import pytest
import rolestack_twemproxy as tw
import yaml
from saltfactories.utils.functional import Loaders

from tests.support.paths import LOADER_DIRS
from tests.support.paths import STATES
from tests.support.services import free_port
from tests.support.services import wait_for
from tests.support.twemproxy import PrivateNutcracker
from tests.support.twemproxy import memcached_get
from tests.support.twemproxy import memcached_set
from tests.support.twemproxy import redis_cli

pytestmark = pytest.mark.timeout(180)

NUTCRACKER_GROUP = "nutcracker"


@pytest.fixture(scope="module")
def backends(service_factory):
    return {
        "redis": service_factory("redis"),
        "sessions_memcached": service_factory("memcached"),
        "alpha1": service_factory("memcached"),
        "alpha2": service_factory("memcached"),
    }


def _server(name, service):
    return {"name": name, "address": "127.0.0.1", "port": service.port}


@pytest.fixture(scope="module")
def proxy_pillar(backends):
    redis, sessions, alpha1, alpha2 = (backends[k] for k in ("redis", "sessions_memcached", "alpha1", "alpha2"))
    pools = [
        {"name": "sessions_redis", "role": "sessions", "kind": "redis", "port": free_port(),
         "servers": [_server("sessions1", redis)], "auth": "sessions_redis_password"},
        {"name": "sessions_memcached", "role": "sessions", "kind": "memcached", "port": free_port(),
         "servers": [_server("sessions1", sessions)], "auth": None},
        {"name": "memcache_alpha", "role": "memcache", "kind": "memcached", "port": free_port(),
         "servers": [_server("memcache-alpha1", alpha1), _server("memcache-alpha2", alpha2)], "auth": None},
    ]  # fmt: skip
    return {"stats_port": free_port(), "pools": sorted(pools, key=lambda pool: pool["port"])}


def _minion_loaders(salt_factories, root, minion_id, rolestack, **overrides):
    """Loaders of a masterless minion whose pillar is ``{"rolestack": rolestack}`` (a pillar tree of its own)."""
    tree = root / f"pillar-{minion_id}"
    tree.mkdir()
    (tree / "top.sls").write_text("base:\n  '*':\n    - rolestack\n")
    (tree / "rolestack.sls").write_text(yaml.safe_dump({"rolestack": rolestack}))
    config = {
        "file_client": "local",
        "ext_pillar": [],
        "pillar_roots": {"base": [str(tree)]},
        **LOADER_DIRS,
        **overrides,
    }
    factory = salt_factories.salt_minion_daemon(minion_id, overrides=config)
    return Loaders(factory.config.copy())


@pytest.fixture(scope="module")
def loaders(salt_factories, test_root, proxy_pillar, backends):
    rolestack = {"proxy": proxy_pillar, "secrets": {"sessions_redis_password": backends["redis"].password}}
    made = _minion_loaders(salt_factories, test_root, "twemproxy-app", rolestack)
    yield made
    made.reset_state()


@pytest.fixture(scope="module")
def nutcracker(test_root, proxy_pillar, backends, loaders):
    text = tw.render(proxy_pillar, {"sessions_redis_password": backends["redis"].password})
    proxy = PrivateNutcracker(
        test_root,
        text,
        [pool["port"] for pool in proxy_pillar["pools"]],
        stats_port=proxy_pillar["stats_port"],
        verbose=tw.LOG_LEVEL,  # the service's level (daemon_opts)
    ).start()
    yield proxy
    proxy.stop()


def port_of(proxy_pillar, name):
    (port,) = [pool["port"] for pool in proxy_pillar["pools"] if pool["name"] == name]
    return port


def test_module_renders_what_the_util_renders(loaders, proxy_pillar, backends):
    rendered = loaders.modules.twemproxy.render()
    assert rendered == tw.render(proxy_pillar, {"sessions_redis_password": backends["redis"].password})
    config = yaml.safe_load(rendered)
    assert config["sessions_redis"]["redis_auth"] == backends["redis"].password
    assert all(settings["listen"].startswith("127.0.0.1:") for settings in config.values())
    assert f"--stats-port={proxy_pillar['stats_port']}" in loaders.modules.twemproxy.defaults()


def test_nutcracker_accepts_the_rendered_config(loaders, nutcracker):
    assert loaders.modules.twemproxy.validate()["valid"] is True
    verdict = loaders.modules.twemproxy.validate(path=str(nutcracker.config))
    assert verdict == {"valid": True, "message": verdict["message"], "path": str(nutcracker.config)}
    assert "syntax is ok" in verdict["message"]


def test_redis_set_with_auth_lands_on_the_backend(nutcracker, proxy_pillar, backends):
    redis, port = backends["redis"], port_of(proxy_pillar, "sessions_redis")
    assert redis_cli(port, "SET", "session:abc", "user-42", password=redis.password) == "OK"
    assert redis_cli(redis.port, "GET", "session:abc", password=redis.password) == "user-42"


def test_redis_without_auth_is_refused(nutcracker, proxy_pillar, backends):
    redis, port = backends["redis"], port_of(proxy_pillar, "sessions_redis")
    refused = redis_cli(port, "SET", "session:unauth", "x")
    assert "NOAUTH" in refused or "Authentication required" in refused, refused
    wrong = redis_cli(port, "SET", "session:unauth", "x", password="not-the-password")
    assert wrong != "OK", wrong
    assert redis_cli(redis.port, "EXISTS", "session:unauth", password=redis.password) == "0"


def test_errors_still_reach_the_log_at_the_services_log_level(nutcracker, proxy_pillar, backends):
    """--verbose=LOG_LEVEL (below nutcracker's default) drops the per-request notice work, not the error messages."""
    redis, port = backends["redis"], port_of(proxy_pillar, "sessions_redis")
    assert f"--verbose={tw.LOG_LEVEL}" in nutcracker.command()
    refused = redis_cli(port, "CONFIG", "GET", "maxmemory", password=redis.password)
    assert "maxmemory" not in refused, refused  # nutcracker does not forward CONFIG
    wait_for(lambda: "parsed unsupported command 'CONFIG'" in nutcracker.log.read_text(), 10, "the error in the log")


def test_memcached_set_lands_on_the_server(nutcracker, proxy_pillar, backends):
    port = port_of(proxy_pillar, "sessions_memcached")
    assert memcached_set(port, "sess_memc_1", "hello") == b"STORED\r\n"
    assert memcached_get(backends["sessions_memcached"].port, "sess_memc_1") == "hello"
    assert memcached_get(port, "sess_memc_1") == "hello"


def _stats_show(loaders, predicate, what):
    seen = {}

    def check():
        seen["stats"] = loaders.modules.twemproxy.stats()
        return predicate(seen["stats"])

    wait_for(check, 10, what)
    return seen["stats"]


def test_stats_and_health_report_the_servers(loaders, nutcracker, proxy_pillar):
    port = port_of(proxy_pillar, "memcache_alpha")
    for index in range(20):
        assert memcached_set(port, f"warm{index}", "v") == b"STORED\r\n"

    # nutcracker aggregates its counters every stats interval, each on its own: wait until both show the 20
    def counted(stats):
        pool = stats["pools"].get("memcache_alpha", {})
        requests = sum(server.get("requests", 0) for server in (pool.get("servers") or {}).values())
        return pool.get("client_eof", 0) >= 20 and requests >= 20

    stats = _stats_show(loaders, counted, "20 clients and their 20 requests in the stats")
    assert set(stats["pools"]) == {"sessions_redis", "sessions_memcached", "memcache_alpha"}
    alpha = stats["pools"]["memcache_alpha"]["servers"]
    assert set(alpha) == {"memcache-alpha1", "memcache-alpha2"}
    assert sum(server["requests"] for server in alpha.values()) >= 20
    health = loaders.modules.twemproxy.health()
    assert health["healthy"] is True, health
    assert health["pools"]["memcache_alpha"]["servers_up"] == 2
    assert health["pools"]["sessions_redis"]["servers"]["sessions1"]["state"] == "up"


def test_a_cache_pool_spreads_similar_keys_over_its_servers(nutcracker, proxy_pillar, backends):
    # keys an application writes differ in their last characters (user:1, user:2...): nutcracker's fnv1a_64 keeps
    # only 32 bits and put all forty of these on one server
    port = port_of(proxy_pillar, "memcache_alpha")
    keys = [f"user:{index}" for index in range(40)]
    for key in keys:
        assert memcached_set(port, key, "v") == b"STORED\r\n"
    held = {name: sum(memcached_get(backends[name].port, key) == "v" for key in keys) for name in ("alpha1", "alpha2")}
    assert sum(held.values()) == len(keys) and min(held.values()) >= 8, held


def test_a_dead_cache_server_is_ejected_and_reported(loaders, nutcracker, proxy_pillar, backends):
    port = port_of(proxy_pillar, "memcache_alpha")
    backends["alpha2"].stop()
    outcomes = {}

    def ejected():
        # traffic makes nutcracker notice: each request for a key of alpha2 fails until it is ejected
        for index in range(20):
            try:
                outcomes[index] = memcached_set(port, f"after{index}", "v", timeout=1)
            except OSError as err:
                outcomes[index] = err
        health = loaders.modules.twemproxy.health()
        return health["pools"]["memcache_alpha"]["servers"]["memcache-alpha2"]["state"] == "ejected"

    wait_for(ejected, 20, "memcache-alpha2 reported ejected")
    health = loaders.modules.twemproxy.health()
    alpha = health["pools"]["memcache_alpha"]
    assert alpha["servers_ejected"] == ["memcache-alpha2"] and alpha["healthy"] is False, alpha
    assert alpha["server_ejects"] >= 1 and alpha["servers"]["memcache-alpha2"]["errors"] >= 1, alpha
    assert alpha["servers"]["memcache-alpha1"]["state"] == "up"
    assert health["pools"]["sessions_redis"]["healthy"] is True
    # its keys now go to the server left
    for index in range(10):
        assert memcached_set(port, f"moved{index}", "v") == b"STORED\r\n"
        assert memcached_get(backends["alpha1"].port, f"moved{index}") == "v"


def _group_exists(name):
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.skipif(not _group_exists(NUTCRACKER_GROUP), reason="no nutcracker group (package nutcracker)")
def test_state_writes_a_config_nutcracker_accepts(loaders, tmp_path):
    path = tmp_path / "nutcracker.yml"
    would = loaders.states.twemproxy.config_managed(name=str(path), test=True)
    assert would.result is None and "redis_auth: <redacted>" in would.changes["diff"], would
    assert not path.exists()
    done = loaders.states.twemproxy.config_managed(name=str(path))
    assert done.result is True and "nutcracker -t accepted it first" in done.comment, done
    assert path.read_text() == loaders.modules.twemproxy.render()
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_uid == 0
    assert grp.getgrgid(info.st_gid).gr_name == NUTCRACKER_GROUP
    again = loaders.states.twemproxy.config_managed(name=str(path))
    assert again.result is True and again.changes == {}, again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nutcracker.yml"]


@pytest.fixture(scope="module")
def poolless_loaders(salt_factories, test_root, proxy_pillar, backends):
    """A web host whose pillar has no pool left: the config rendered is one nutcracker refuses."""
    rolestack = {"proxy": {"stats_port": proxy_pillar["stats_port"], "pools": []}, "secrets": {}}
    made = _minion_loaders(salt_factories, test_root, "twemproxy-poolless", rolestack)
    yield made
    made.reset_state()


def test_state_refuses_an_invalid_config_and_the_proxy_keeps_serving(poolless_loaders, nutcracker, proxy_pillar):
    live = nutcracker.config
    before = live.read_text()
    group = grp.getgrgid(os.stat(live).st_gid).gr_name
    would = poolless_loaders.states.twemproxy.config_managed(name=str(live), group=group, test=True)
    assert would.result is None and would.changes["diff"], would
    ret = poolless_loaders.states.twemproxy.config_managed(name=str(live), group=group)
    assert ret.result is False, ret
    assert "syntax is invalid" in ret.comment and "left as it was" in ret.comment, ret
    assert live.read_text() == before
    assert sorted(p.name for p in live.parent.iterdir() if p.name.startswith(".nutcracker.yml")) == []
    assert nutcracker.process.poll() is None
    port = port_of(proxy_pillar, "sessions_memcached")
    assert memcached_set(port, "still_serving", "yes") == b"STORED\r\n"
    assert memcached_get(port, "still_serving") == "yes"


def test_a_dead_sessions_server_fails_requests_and_is_never_ejected(loaders, nutcracker, proxy_pillar, backends):
    """The documented trade-off (auto_eject_hosts false for sessions): no silent move of sessions to another server."""
    port = port_of(proxy_pillar, "sessions_memcached")
    backends["sessions_memcached"].stop()
    replies = []
    for index in range(10):
        try:
            replies.append(memcached_set(port, f"sess_after{index}", "v", timeout=2))
        except OSError as err:
            replies.append(err)
    assert all(reply != b"STORED\r\n" for reply in replies), replies
    health = loaders.modules.twemproxy.health()
    server = health["pools"]["sessions_memcached"]["servers"]["sessions1"]
    assert server["state"] == "down" and server["reachable"] is False, health
    assert health["pools"]["sessions_memcached"]["servers_ejected"] == []
    stats = _stats_show(
        loaders, lambda s: s["pools"]["sessions_memcached"]["servers"]["sessions1"]["server_err"] >= 1, "errors"
    )
    assert stats["pools"]["sessions_memcached"]["server_ejects"] == 0


def _sls_loaders(salt_factories, root, minion_id, proxy):
    rolestack = {"platform": {"name": "webplatform"}, "host": {"roles": ["app"]}, "secrets": {"x": "y"}}
    if proxy is not None:
        rolestack["proxy"] = proxy
    return _minion_loaders(salt_factories, root, minion_id, rolestack, file_roots={"base": [str(STATES)]})


def _by_state(high):
    return {(name, next(key for key in body if not key.startswith("__"))): body for name, body in high.items()}


def test_sls_validates_the_config_and_restarts_on_change(salt_factories, test_root, proxy_pillar):
    loaders = _sls_loaders(salt_factories, test_root, "twemproxy-sls", proxy_pillar)
    high = _by_state(loaders.modules.state.show_sls("proxy"))
    assert {"proxy-package", "proxy-defaults", "proxy-config", "proxy-service"} == {name for name, _ in high}
    assert ("proxy-config", "twemproxy") in high and ("proxy-defaults", "twemproxy") in high
    service = high[("proxy-service", "rolestack_service")]["rolestack_service"]
    assert (
        "running" in service and {"watch": [{"twemproxy": "proxy-config"}, {"twemproxy": "proxy-defaults"}]} in service
    )
    loaders.reset_state()


def test_sls_stops_the_proxy_without_pools_and_refuses_a_host_without_proxy(salt_factories, test_root):
    loaders = _sls_loaders(salt_factories, test_root, "twemproxy-sls-empty", {"stats_port": 22222, "pools": []})
    high = _by_state(loaders.modules.state.show_sls("proxy"))
    assert (
        "dead" in high[("proxy-service", "rolestack_service")]["rolestack_service"]
        and ("proxy-config", "twemproxy") not in high
    )
    loaders.reset_state()
    loaders = _sls_loaders(salt_factories, test_root, "twemproxy-sls-none", None)
    refused = loaders.modules.state.show_sls("proxy")
    assert "no rolestack:proxy pillar for twemproxy-sls-none" in str(refused), refused
    loaders.reset_state()
