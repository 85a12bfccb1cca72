"""Pure logic of the inventory: validation (every malformed shape names its key path) and derivation."""

import copy

import pytest
import rolestack_backup as backup_engine
import rolestack_base as base
import rolestack_inventory as inv
import rolestack_kv as kv

from tests.support import synthetic
from tests.support.paths import EXAMPLE_INVENTORY


@pytest.fixture
def example():
    return inv.load_yaml(EXAMPLE_INVENTORY.read_text(), str(EXAMPLE_INVENTORY))


def test_example_inventory_is_valid(example):
    assert inv.validate(example) == []


def _set(data, path, value):
    keys = path.split("/")
    for key in keys[:-1]:
        data = data[key]
    if value is _DELETE:
        del data[keys[-1]]
    else:
        data[keys[-1]] = value


_DELETE = object()

# (what is changed, new value, the key path the error must name, a word the message must contain)
MALFORMED = [
    ("level", _DELETE, "level:", "expected"),
    ("level", "Prod Env", "level:", "'Prod Env'"),
    ("domain", "bad_domain!", "domain:", "'bad_domain!'"),
    ("network", "10.10.10.1/24", "network:", "CIDR"),
    ("network", "not-a-network", "network:", "'not-a-network'"),
    ("hosts", {}, "hosts:", "non-empty mapping"),
    ("hosts", ["salt"], "hosts:", "mapping"),
    ("colour", "blue", "colour:", "unknown key"),
    ("hosts/Bad_Host", {"roles": ["app"], "address": "10.10.10.99"}, "hosts.Bad_Host:", "DNS label"),
    ("hosts/db2/roles", ["db", "warehouse"], "hosts.db2.roles[1]:", "'warehouse'"),
    ("hosts/db2/roles", [], "hosts.db2.roles:", "non-empty list"),
    ("hosts/db2/roles", "db", "hosts.db2.roles:", "'db'"),
    ("hosts/db2/roles", ["db", "db"], "hosts.db2.roles[1]:", "twice"),
    ("hosts/db2/address", "10.10.11.12", "hosts.db2.address:", "outside the network"),
    ("hosts/db2/address", "10.10.10.11", "hosts.db2.address:", "db1-masterdb"),
    ("hosts/db2/address", "10.10.10.256", "hosts.db2.address:", "'10.10.10.256'"),
    ("hosts/db2/address", "10.10.10.255", "hosts.db2.address:", "broadcast"),
    ("hosts/db2/address", 1234, "hosts.db2.address:", "1234"),
    ("hosts/db2/port", 3306, "hosts.db2.port:", "unknown key"),
    ("hosts/db2/cluster", "alpha", "hosts.db2.cluster:", "takes a cluster"),
    ("hosts/memcache-alpha1/cluster", "Alpha!", "hosts.memcache-alpha1.cluster:", "'Alpha!'"),
    ("hosts/db2", "db", "hosts.db2:", "expected a mapping"),
    ("hosts/warehouse1", {"address": "10.10.10.90"}, "hosts.warehouse1:", "'warehouse'"),
    ("hosts/db2/roles", ["db", "masterdb"], "hosts:", "role 'masterdb' is on db1-masterdb, db2"),
    ("hosts/db3", {"roles": ["masterdb"], "address": "10.10.10.13"}, "hosts.db3.roles:", "needs role 'db'"),
    ("hosts/db1-masterdb/roles", ["db"], "hosts:", "no masterdb"),
    ("hosts/salt/roles", ["app"], "hosts:", "role 'salt'"),
    ("hosts/salt2", {"roles": ["salt"], "address": "10.10.10.9"}, "hosts:", "role 'salt' is on salt, salt2"),
    ("aliases/www", ["frontend9"], "aliases.www[0]:", "'frontend9'"),
    ("aliases/db2", ["app1"], "aliases.db2:", "clashes"),
    ("aliases/web", [], "aliases.web:", "non-empty list"),
    ("secrets/replication_password", "short", "secrets.replication_password:", "at least 16"),
    ("secrets/api_token", "x" * 20, "secrets.api_token:", "unknown secret"),
    ("secrets/sessions_redis_password", _DELETE, "secrets.sessions_redis_password:", "sessions1 needs it"),
    ("secrets/replication_password", _DELETE, "secrets.replication_password:", "db1-masterdb, db2 need it"),
    ("aliases", "www", "aliases:", "mapping"),
    ("db", ["fast"], "db:", "expected a mapping"),
    ("db/max_lag_seconds", 0, "db.max_lag_seconds:", "from 1 to 86400"),
    ("db/semi_sync_timeout_ms", "10s", "db.semi_sync_timeout_ms:", "'10s'"),
    ("db/switchover_max_lag_seconds", True, "db.switchover_max_lag_seconds:", "integer"),
    ("db/lag", 3, "db.lag:", "unknown key"),
    # application databases and their accounts
    ("databases", ["wiki"], "databases:", "mapping of database name"),
    ("databases/wiki-2", {}, "databases.wiki-2:", "A-Z a-z 0-9 _"),
    ("databases/" + "w" * 65, {}, "databases.www", "1-64 characters"),
    ("databases/mysql", {}, "databases.mysql:", "system database"),
    ("databases/wiki", "yes", "databases.wiki:", "got a str of length 3"),
    ("databases/wiki/engine", "innodb", "databases.wiki.engine:", "unknown key"),
    ("databases/wiki/character_set", "utf-8", "databases.wiki.character_set:", "'utf-8'"),
    ("databases/wiki/collate", "latin1_swedish_ci", "databases.wiki.collate:", "starting with 'utf8mb4_'"),
    ("databases/wiki/collate", 7, "databases.wiki.collate:", "collation name"),
    ("databases/wiki/users", ["wiki"], "databases.wiki.users:", "mapping of user name"),
    ("databases/wiki/users/wiki/roles", ["app", "wizard"], "databases.wiki.users.wiki.roles[1]:", "'wizard'"),
    ("databases/wiki/users/wiki/roles", [], "databases.wiki.users.wiki.roles:", "non-empty list of roles"),
    ("databases/wiki/users/wiki/roles", _DELETE, "databases.wiki.users.wiki.roles:", "None"),
    ("databases/wiki/users/wiki/privileges", ["SELECT", "FLY"], "databases.wiki.users.wiki.privileges[1]:", "'FLY'"),
    ("databases/wiki/users/wiki/privileges", ["SUPER"], "databases.wiki.users.wiki.privileges[0]:", "'SUPER'"),
    ("databases/wiki/users/wiki/privileges", [], "databases.wiki.users.wiki.privileges:", "non-empty list"),
    ("databases/wiki/users/wiki/privileges", ["select", "SELECT"], "databases.wiki.users.wiki.privileges[1]:", "twice"),
    ("databases/wiki/users/wiki/ssl", "yes", "databases.wiki.users.wiki.ssl:", "'yes'"),
    ("databases/wiki/users/wiki/host", "%", "databases.wiki.users.wiki.host:", "unknown key"),
    ("databases/wiki/users/wiki", ["app"], "databases.wiki.users.wiki:", "expected a mapping"),
    (
        "databases/wiki/users/wiki bot",
        {"roles": ["app"], "privileges": ["SELECT"]},
        "databases.wiki.users.wiki bot:",
        "1-80 characters",
    ),
    (
        "databases/wiki/users/" + "u" * 81,
        {"roles": ["app"], "privileges": ["SELECT"]},
        "databases.wiki.users.uuu",
        "1-80 characters",
    ),
    (
        "databases/wiki/users/repl",
        {"roles": ["app"], "privileges": ["SELECT"]},
        "databases.wiki.users.repl:",
        "built-in account",
    ),
    (
        "databases/wiki/users/Root",
        {"roles": ["app"], "privileges": ["SELECT"]},
        "databases.wiki.users.Root:",
        "built-in account",
    ),
    (
        "databases/blog",
        {"users": {"wiki": {"roles": ["frontend"], "privileges": ["SELECT"]}}},
        "databases.blog.users.wiki.roles:",
        "databases.wiki.users.wiki",
    ),
    (
        "databases/blog",
        {"users": {"wiki": {"roles": ["app"], "privileges": ["SELECT"], "ssl": False}}},
        "databases.blog.users.wiki.ssl:",
        "databases.wiki.users.wiki.ssl",
    ),
    ("secrets/db_users/wiki", _DELETE, "secrets.db_users.wiki:", "databases.wiki.users.wiki"),
    ("secrets/db_users/wiki", "short", "secrets.db_users.wiki:", "at least 16"),
    ("secrets/db_users/ghost", "x" * 20, "secrets.db_users.ghost:", "no such user"),
    ("secrets/db_users", ["wiki"], "secrets.db_users:", "mapping of user name to password"),
    ("secrets/db_users", _DELETE, "secrets.db_users.wiki:", "missing"),
    # the key-value roles: sessions settings, cache clusters, proxy ports
    ("sessions", ["redis"], "sessions:", "a list"),
    ("sessions/colour", "blue", "sessions.colour:", "unknown key"),
    ("sessions/redis_maxmemory_mb", 8, "sessions.redis_maxmemory_mb:", "an int"),
    ("sessions/redis_maxmemory_mb", "256", "sessions.redis_maxmemory_mb:", "a str of length 3"),
    ("sessions/redis_maxmemory_mb", True, "sessions.redis_maxmemory_mb:", "a bool"),
    ("sessions/memcached_memory_mb", 2**21, "sessions.memcached_memory_mb:", "16 to 1048576"),
    ("sessions/redis_maxmemory_policy", "lru", "sessions.redis_maxmemory_policy:", "volatile-lru"),
    ("caches", "alpha", "caches:", "a str"),
    ("caches/elastic", {}, "caches.elastic:", "unknown key"),
    ("caches/memcache", ["alpha"], "caches.memcache:", "mapping of cluster name"),
    ("caches/memcache/alpha", 11212, "caches.memcache.alpha:", "an int"),
    ("caches/memcache/alpha", _DELETE, "caches.memcache.alpha:", "memcache-alpha1, memcache-alpha2"),
    ("caches/memcache", _DELETE, "caches.memcache.alpha:", "proxy_port"),
    ("caches", _DELETE, "caches.redis.beta:", "redis-beta1"),
    ("caches/memcache/Alpha!", {"proxy_port": 11300}, "caches.memcache.<a str", "lowercase label"),
    ("caches/memcache/alpha/proxy_port", _DELETE, "caches.memcache.alpha.proxy_port:", "missing"),
    ("caches/memcache/alpha/proxy_port", "11212", "caches.memcache.alpha.proxy_port:", "a str of length 5"),
    ("caches/memcache/alpha/proxy_port", 80, "caches.memcache.alpha.proxy_port:", "1024 to 65535"),
    ("caches/memcache/alpha/proxy_port", 70000, "caches.memcache.alpha.proxy_port:", "an int"),
    ("caches/memcache/alpha/proxy_port", 6379, "caches.memcache.alpha.proxy_port:", "other than 6379, 11211, 22222"),
    ("caches/memcache/alpha/proxy_port", 11211, "caches.memcache.alpha.proxy_port:", "sessions stores"),
    ("caches/memcache/alpha/proxy_port", 22222, "caches.memcache.alpha.proxy_port:", "statistics"),
    ("caches/redis/beta/proxy_port", 11212, "caches.redis.beta.proxy_port:", "caches.memcache.alpha"),
    ("caches/memcache/alpha/memory_mb", 0, "caches.memcache.alpha.memory_mb:", "megabytes"),
    ("caches/memcache/alpha/maxmemory_policy", "allkeys-lru", "caches.memcache.alpha.maxmemory_policy:", "unknown"),
    ("caches/redis/beta/maxmemory_policy", "allkeys", "caches.redis.beta.maxmemory_policy:", "a str of length 7"),
    ("caches/redis/beta/maxmemory_mb", 1.5, "caches.redis.beta.maxmemory_mb:", "a float"),
    ("hosts/sessions1/roles", ["sessions", "memcache"], "hosts.sessions1.roles:", "separate hosts"),
    ("hosts/sessions1/roles", ["sessions", "redis"], "hosts.sessions1.roles:", "cache flush"),
    ("hosts/memcache-gamma1", {"address": "10.10.10.33"}, "caches.memcache.gamma:", "memcache-gamma1 is in"),
    ("hosts/redis1", {"address": "10.10.10.37"}, "caches.redis.default:", "cluster 'default'"),
]


@pytest.mark.parametrize(
    ("path", "value", "key_path", "word"), MALFORMED, ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)]
)
def test_malformed_inventory_is_rejected_naming_its_key_path(example, path, value, key_path, word):
    data = copy.deepcopy(example)
    _set(data, path, value)
    errors = inv.validate(data)
    matching = [error for error in errors if error.startswith(key_path)]
    assert matching, f"no error names {key_path!r}: {errors}"
    assert any(word in error for error in matching), matching
    assert any("expected" in error for error in matching), matching
    with pytest.raises(inv.InventoryError):
        inv.derive(data)


def test_at_least_25_distinct_malformed_inventories():
    assert len({(m[0], repr(m[1])) for m in MALFORMED}) >= 25


def test_all_errors_are_reported_at_once(example):
    data = copy.deepcopy(example)
    data["level"] = "BAD"
    data["hosts"]["db2"]["address"] = "192.168.1.1"
    data["hosts"]["app1"]["roles"] = ["wizard"]
    errors = inv.validate(data)
    assert {e.split(":")[0] for e in errors} >= {"level", "hosts.db2.address", "hosts.app1.roles[0]"}


def test_secret_values_are_never_echoed(example):
    data = copy.deepcopy(example)
    data["secrets"]["replication_password"] = "tooshortsecret"
    message = str(inv.InventoryError(inv.validate(data)))
    assert "tooshortsecret" not in message


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("hosts:\n  db2: {}\n  db2: {}\n", "duplicate key 'db2'"),
        ("level: [unclosed\n", "YAML"),
    ],
)
def test_yaml_errors_name_the_problem(text, word):
    with pytest.raises(inv.InventoryError, match=word):
        inv.load_yaml(text)


def test_not_a_mapping():
    assert inv.validate(["a"])[0].startswith("<top>:")


def test_inventory_under_a_pillar_key(example):
    import yaml

    text = yaml.safe_dump({"rolestack": {"inventory": example}})
    assert inv.load_yaml(text) == example


@pytest.mark.parametrize(
    ("name", "roles", "cluster"),
    [
        ("db1-masterdb", ["db", "masterdb"], None),
        ("memcache-alpha1", ["memcache"], "alpha"),
        ("app1-jobrunner", ["app", "jobrunner"], None),
        ("sessions1", ["sessions"], None),
        ("salt", ["salt"], None),
        ("redis-beta12", ["redis"], "beta"),
    ],
)
def test_roles_from_name(name, roles, cluster):
    assert inv.roles_from_name(name) == (roles, cluster, None)


@pytest.mark.parametrize("name", ["web1", "db1-alpha", "memcache-alpha1-beta2", "1db"])
def test_roles_from_bad_name(name):
    roles, _, error = inv.roles_from_name(name)
    assert roles == [] and error


def test_derive_gives_each_role_its_topology(example):
    derived = inv.derive(example)
    hosts = derived["hosts"]
    db2 = hosts["db2"]
    assert db2["host"]["roles"] == ["db"]
    assert db2["db"]["is_master"] is False
    assert db2["db"]["masterdb"]["address"] == "10.10.10.11"
    assert {peer["name"] for peer in db2["db"]["peers"]} == {"db1-masterdb", "db2"}
    assert len({peer["server_id"] for peer in db2["db"]["peers"]}) == 2
    assert hosts["db1-masterdb"]["db"]["is_master"] is True
    app = hosts["app1"]
    pools = {pool["name"]: pool for pool in app["proxy"]["pools"]}
    assert [s["address"] for s in pools["sessions_redis"]["servers"]] == ["10.10.10.21"]
    assert [s["name"] for s in pools["memcache_alpha"]["servers"]] == ["memcache-alpha1", "memcache-alpha2"]
    assert hosts["memcache-alpha1"]["memcache"]["cluster"] == "alpha"
    assert hosts["memcache-alpha1"]["memcache"]["allow"] == ["10.10.10.51/32", "10.10.10.52/32"]
    assert hosts["sessions1"]["sessions"]["allow"] == ["10.10.10.51/32", "10.10.10.52/32"]
    assert hosts["elastic1"]["elastic"]["cluster"] == "main"
    assert app["dns"] == {
        "servers": ["10.10.10.2"],
        "search": ["production.wpdn"],
        "resolv_conf": base.resolv_conf_text(["10.10.10.2"], ["production.wpdn"]),
    }
    assert app["mail"]["relay"]["fqdn"] == "mail.production.wpdn"
    assert [
        "10.10.10.11",
        "db1-masterdb.production.wpdn",
        "db1-masterdb",
        "masterdb.production.wpdn",
        "masterdb",
    ] in app["etc_hosts"]
    salt = hosts["salt"]
    names = {(r["name"], r["data"]) for r in salt["dns_zone"]["records"]}
    assert {("db2", "10.10.10.12"), ("masterdb", "10.10.10.11"), ("elasticsearch", "10.10.10.41")} <= names
    assert ("frontend1", None) not in names
    backup_sources = {s["name"] for s in hosts["backup"]["backup"]["sources"]}
    assert "backup" not in backup_sources and "db2" in backup_sources
    assert hosts["mail"]["mail"]["relay_clients"][:2] == ["10.10.10.2/31", "10.10.10.4/32"]


def test_key_value_roles_get_their_servers_settings_and_firewall(example):
    hosts = inv.derive(example)["hosts"]
    allow = ["10.10.10.51/32", "10.10.10.52/32"]
    ssh = {"name": "ssh", "port": 22, "allow": ["10.10.10.2/32"]}  # every host but salt: sshd from salt only
    rsync_backup = {"name": "rsync-backup", "port": 8873, "allow": ["10.10.10.4/32"]}  # the backup host pulls
    sessions = hosts["sessions1"]
    assert sessions["sessions"]["redis"] == {"port": 6379, "maxmemory_mb": 256, "maxmemory_policy": "volatile-lru"}
    assert sessions["sessions"]["memcached"] == {"port": 11211, "memory_mb": 256}
    assert sessions["firewall"]["ruleset"] == kv.nft_ruleset(sessions["firewall"]["services"])
    assert sessions["firewall"] == {
        "ruleset": sessions["firewall"]["ruleset"],
        "services": [
            {"name": "redis", "port": 6379, "allow": allow},
            {"name": "memcached", "port": 11211, "allow": allow},
            ssh,
            rsync_backup,
        ],
    }
    memcache = hosts["memcache-alpha2"]["memcache"]
    assert {k: v for k, v in memcache.items() if k != "members"} == {
        "cluster": "alpha",
        "allow": allow,
        "port": 11211,
        "memory_mb": 256,
    }
    assert [m["name"] for m in memcache["members"]] == ["memcache-alpha1", "memcache-alpha2"]
    assert hosts["memcache-alpha2"]["firewall"]["services"] == [
        {"name": "memcached", "port": 11211, "allow": allow},
        ssh,
        rsync_backup,
    ]
    redis = hosts["redis-beta1"]["redis"]
    assert (redis["cluster"], redis["port"], redis["maxmemory_mb"], redis["maxmemory_policy"]) == (
        "beta",
        6379,
        256,
        "allkeys-lru",
    )
    assert "proxy_port" not in redis and "sessions_redis_password" not in hosts["redis-beta1"]["secrets"]
    assert hosts["redis-beta1"]["secrets"]["cache_redis_password"] == "example-cache-redis-0123456789"
    assert sorted(hosts["redis-beta1"]["secrets"]) == ["cache_redis_password", "rsync_backup_source"]
    assert hosts["redis-beta1"]["firewall"]["services"] == [
        {"name": "redis", "port": 6379, "allow": allow},
        ssh,
        rsync_backup,
    ]
    for name in ("app1", "db2", "elastic1"):
        assert hosts[name]["firewall"]["services"] == [ssh, rsync_backup], name
    assert "firewall" not in hosts["salt"]  # the jump box: operators reach it from anywhere
    # a host with both cache roles runs (and lets through) both servers
    data = copy.deepcopy(example)
    data["hosts"]["cache1"] = {"roles": ["memcache", "redis"], "cluster": "alpha", "address": "10.10.10.38"}
    data["caches"]["redis"]["alpha"] = {"proxy_port": 6381}
    both = inv.derive(data)["hosts"]["cache1"]
    assert [s["name"] for s in both["firewall"]["services"]] == ["memcached", "redis", "ssh", "rsync-backup"]
    assert both["redis"]["cluster"] == both["memcache"]["cluster"] == "alpha"


def test_settings_of_sessions_and_caches_follow_the_inventory(example):
    data = copy.deepcopy(example)
    data["sessions"] = {"redis_maxmemory_mb": 1024, "redis_maxmemory_policy": "volatile-ttl"}
    data["caches"]["memcache"]["alpha"]["memory_mb"] = 2048
    data["caches"]["redis"]["beta"] = {"proxy_port": 6390, "maxmemory_policy": "allkeys-lfu"}
    hosts = inv.derive(data)["hosts"]
    assert hosts["sessions1"]["sessions"]["redis"] == {
        "port": 6379,
        "maxmemory_mb": 1024,
        "maxmemory_policy": "volatile-ttl",
    }
    assert hosts["sessions1"]["sessions"]["memcached"]["memory_mb"] == 256
    assert hosts["memcache-alpha1"]["memcache"]["memory_mb"] == 2048
    assert hosts["redis-beta1"]["redis"]["maxmemory_mb"] == 256
    assert hosts["redis-beta1"]["redis"]["maxmemory_policy"] == "allkeys-lfu"
    assert {p["name"]: p["port"] for p in hosts["app1"]["proxy"]["pools"]}["redis_beta"] == 6390


def test_web_hosts_get_the_proxy_pools(example):
    hosts = inv.derive(example, {"frontend1": ["10.10.10.61"]})["hosts"]
    proxy = hosts["app1"]["proxy"]
    assert proxy["stats_port"] == 22222
    assert [(p["name"], p["role"], p["kind"], p["port"], p["auth"]) for p in proxy["pools"]] == [
        ("sessions_redis", "sessions", "redis", 6379, "sessions_redis_password"),
        ("redis_beta", "redis", "redis", 6380, "cache_redis_password"),
        ("sessions_memcached", "sessions", "memcached", 11211, None),
        ("memcache_alpha", "memcache", "memcached", 11212, None),
    ]
    pools = {p["name"]: p for p in proxy["pools"]}
    assert pools["memcache_alpha"]["servers"] == [
        {"name": "memcache-alpha1", "address": "10.10.10.31", "port": 11211},
        {"name": "memcache-alpha2", "address": "10.10.10.32", "port": 11211},
    ]
    assert pools["sessions_redis"]["servers"] == [{"name": "sessions1", "address": "10.10.10.21", "port": 6379}]
    assert pools["redis_beta"]["servers"] == [{"name": "redis-beta1", "address": "10.10.10.36", "port": 6379}]
    for name in ("app2", "frontend1"):
        assert hosts[name]["proxy"] is proxy
    for name in ("sessions1", "memcache-alpha1", "db2", "salt"):
        assert "proxy" not in hosts[name], name
    # the auth names are secrets the web hosts receive
    assert {p["auth"] for p in proxy["pools"] if p["auth"]} <= set(hosts["app1"]["secrets"])
    # the allow-lists follow the web hosts the mine reports
    assert hosts["sessions1"]["firewall"]["services"][0]["allow"] == [
        "10.10.10.51/32",
        "10.10.10.52/32",
        "10.10.10.61/32",
    ]


def test_a_pool_without_servers_is_left_out_and_servers_are_sorted(example):
    data = copy.deepcopy(example)
    del data["hosts"]["redis-beta1"]
    data["hosts"]["memcache-alpha0"] = {"roles": ["memcache"], "cluster": "alpha"}  # pending: no address
    data["hosts"]["memcache-alpha3"] = {"roles": ["memcache"], "cluster": "alpha", "address": "10.10.10.30"}
    data["caches"]["memcache"]["unused"] = {"proxy_port": 11300}  # a cluster without hosts is accepted
    assert inv.validate(data) == []
    pools = inv.derive(data)["hosts"]["app1"]["proxy"]["pools"]
    assert [p["name"] for p in pools] == ["sessions_redis", "sessions_memcached", "memcache_alpha"]
    assert [s["name"] for s in pools[-1]["servers"]] == ["memcache-alpha1", "memcache-alpha2", "memcache-alpha3"]
    data["hosts"]["memcache-alpha0"]["address"] = "10.10.10.29"
    pools = inv.derive(data)["hosts"]["app1"]["proxy"]["pools"]
    assert pools[-1]["servers"][0]["name"] == "memcache-alpha0"


def test_db_settings_have_defaults_and_follow_the_inventory(example):
    derived = inv.derive(example)["hosts"]
    assert derived["db2"]["db"]["settings"] == {
        "semi_sync_timeout_ms": 10000,
        "max_lag_seconds": 30,
        "switchover_max_lag_seconds": 5,
    }
    data = copy.deepcopy(example)
    data["db"] = {"max_lag_seconds": 120}
    assert inv.derive(data)["hosts"]["db1-masterdb"]["db"]["settings"]["max_lag_seconds"] == 120
    assert "db" not in inv.derive(data)["hosts"]["app1"]


def test_secrets_only_reach_roles_that_need_them(example):
    hosts = inv.derive(example)["hosts"]
    assert "replication_password" in hosts["db2"]["secrets"]
    assert "replication_password" not in hosts["app1"]["secrets"]
    assert "sessions_redis_password" in hosts["app1"]["secrets"]
    assert "sessions_redis_password" in hosts["sessions1"]["secrets"]
    assert "sessions_redis_password" not in hosts["db2"]["secrets"]
    # the rsync daemon's (its secrets file) and its own backup source secret (rolestack_backup.source_pillar)
    assert sorted(hosts["salt"]["secrets"]) == ["rsync_backup_source", "rsync_modules"]


def test_rsync_secret_reaches_only_the_backup_host_and_db_admin_password_no_host(example):
    hosts = inv.derive(example)["hosts"]
    with_rsync = sorted(name for name, pillar in hosts.items() if "rsync_backup_secret" in pillar.get("secrets", {}))
    assert with_rsync == ["backup"]
    assert not [name for name, pillar in hosts.items() if "db_admin_password" in pillar.get("secrets", {})]
    # still accepted (documented unused), no longer required
    data = copy.deepcopy(example)
    del data["secrets"]["db_admin_password"]
    assert inv.validate(data) == []
    del data["secrets"]["rsync_backup_secret"]
    assert inv.validate(data) == ["secrets.rsync_backup_secret: missing, expected a value because backup needs it"]


def test_backup_sources_get_their_daemon_own_secret_and_firewall_port(example):
    derived = inv.derive(example)
    hosts = derived["hosts"]
    secret = example["secrets"]["rsync_backup_secret"]
    engine = backup_engine.derive(example, [dict(pillar["host"]) for pillar in hosts.values()])
    sources = sorted(source["name"] for source in engine["sources"])
    with_source = sorted(name for name, pillar in hosts.items() if "source" in pillar["backup"])
    assert with_source == sources and "salt" in sources
    assert "backup" not in with_source and "frontend1" not in with_source  # the backup host; a pending host
    assert "source" not in derived["common"]["backup"]
    rsync_backup = {"name": "rsync-backup", "port": 8873, "allow": ["10.10.10.4/32"]}
    for name in sources:
        pillar = hosts[name]
        source = pillar["backup"]["source"]
        own = pillar["secrets"][inv.BACKUP_SOURCE_SECRET]
        assert own == f"backup:{backup_engine.host_secret(secret, name)}\n", name
        assert "secrets" not in source and own not in str(source) and secret not in str(pillar), name
        assert source["address"] == pillar["host"]["address"] and "hosts allow = 10.10.10.4\n" in source["config"]
        assert f"--address={pillar['host']['address']}" in source["unit"]
        # no other host holds this host's secret
        others = [other for other, p in hosts.items() if other != name and own in str(p)]
        assert others == [], name
        if name == "salt":  # no firewall on the salt host (the jump box): none is made for the daemon
            assert "firewall" not in pillar
        else:
            assert pillar["firewall"]["services"][-1] == rsync_backup, name
            assert pillar["firewall"]["ruleset"] == kv.nft_ruleset(pillar["firewall"]["services"])
    for name in ("backup", "frontend1"):
        assert inv.BACKUP_SOURCE_SECRET not in hosts[name].get("secrets", {}), name
        assert all(s["name"] != "rsync-backup" for s in hosts[name].get("firewall", {}).get("services", []))
    # the shared lists are not changed: the key-value hosts' service lists and allow-lists stay their own
    assert [s["name"] for s in hosts["sessions1"]["firewall"]["services"]].count("rsync-backup") == 1
    # db hosts: the pre-transfer database backup; other hosts none
    assert (
        "pre-xfer exec = /bin/systemctl start rolestack-db-backup.service" in hosts["db2"]["backup"]["source"]["config"]
    )
    assert hosts["db2"]["backup"]["source"]["db_backup"]["dir"] == backup_engine.DB_DUMP_DIR
    assert hosts["app1"]["backup"]["source"]["db_backup"] is None and "pre-xfer" not in str(hosts["app1"]["backup"])


def test_no_backup_host_address_no_source(example):
    data = copy.deepcopy(example)
    del data["hosts"]["backup"]["address"]  # the backup host pending: nobody can be allowed yet
    hosts = inv.derive(data)["hosts"]
    assert not [name for name, pillar in hosts.items() if "source" in pillar["backup"]]
    assert not [name for name, pillar in hosts.items() if inv.BACKUP_SOURCE_SECRET in pillar.get("secrets", {})]
    assert all(s["name"] != "rsync-backup" for p in hosts.values() for s in p.get("firewall", {}).get("services", []))
    # and once it reports its address, every other host with an address is a source
    hosts = inv.derive(data, {"backup": ["10.10.10.4"]})["hosts"]
    assert hosts["app1"]["backup"]["source"]["config"].count("hosts allow = 10.10.10.4\n") == 2


def test_missing_address_comes_from_the_mine(example):
    derived = inv.derive(example)
    assert derived["common"]["pending"] == ["frontend1"]
    assert derived["hosts"]["frontend1"]["host"]["address"] is None
    derived = inv.derive(example, {"frontend1": ["127.0.0.1", "192.168.0.7", "10.10.10.61"]})
    assert derived["common"]["pending"] == []
    assert derived["hosts"]["frontend1"]["host"]["address"] == "10.10.10.61"
    www = [r for r in derived["hosts"]["salt"]["dns_zone"]["records"] if r["name"] == "www"]
    assert www == [{"name": "www", "type": "A", "data": "10.10.10.61"}]


@pytest.mark.parametrize(
    ("reported", "error"),
    [
        (["10.10.10.12"], "hosts.frontend1: its mine address 10.10.10.12 is already the inventory address of db2"),
        (["10.10.10.255"], "hosts.frontend1: its mine address 10.10.10.255 is the network or broadcast address"),
        (["10.10.10.0"], "hosts.frontend1: its mine address 10.10.10.0 is the network or broadcast address"),
    ],
)
def test_mine_addresses_are_checked_like_inventory_ones(example, reported, error):
    with pytest.raises(inv.InventoryError) as err:
        inv.derive(example, {"frontend1": ["127.0.0.1", *reported]})
    assert error in err.value.errors[0] and len(err.value.errors) == 1


def test_two_hosts_reporting_one_mine_address_is_an_error_naming_both(example):
    data = copy.deepcopy(example)
    data["hosts"]["app3"] = None
    mine = {"frontend1": ["10.10.10.61"], "app3": ["10.10.10.61"]}
    with pytest.raises(inv.InventoryError) as err:
        inv.derive(data, mine)
    assert err.value.errors == [
        "hosts.app3: its mine address 10.10.10.61 is already the mine address of frontend1, expected unique addresses"
    ]
    # a host address beside the broadcast one is used; addresses outside the network are ignored
    mine = {"frontend1": ["10.10.10.255", "10.10.10.61"], "app3": ["192.168.1.5", "not an address", "10.10.10.62"]}
    derived = inv.derive(data, mine)
    assert derived["hosts"]["frontend1"]["host"]["address"] == "10.10.10.61"
    assert derived["hosts"]["app3"]["host"]["address"] == "10.10.10.62"
    # a host with no address inside the network stays pending, as before it reports one
    assert inv.derive(data, {"frontend1": ["192.168.1.5"]})["common"]["pending"] == ["frontend1", "app3"]


def test_unknown_minion_gets_common_pillar(example):
    derived = inv.derive(example)
    assert inv.pillar_for(derived, "stranger")["host"] is None
    assert inv.pillar_for(derived, "db2")["host"]["name"] == "db2"
    assert inv.pillar_for(derived, "db2.elsewhere", "production.wpdn")["host"] is None


@pytest.mark.parametrize("minion_id", ["db2.production.wpdn", "salt.production.wpdn", "DB2", "db2."])
def test_a_host_has_one_minion_id_its_inventory_name(example, minion_id):
    # anyone who enrolls another id of a db host (its FQDN) gets the common pillar: no secrets, no policies
    derived = inv.derive(example)
    for zone in (None, "production.wpdn"):
        pillar = inv.pillar_for(derived, minion_id, zone)
        assert pillar is derived["common"]
        assert pillar["host"] is None and "secrets" not in pillar and "x509_signing_policies" not in pillar


def test_server_id_is_stable_and_unique():
    assert inv.server_id("10.10.10.11") == inv.server_id("10.10.10.11") != inv.server_id("10.10.10.12")
    assert 0 < inv.server_id("10.255.255.255") < 2**32


def test_synthetic_inventory_is_valid_and_derives_linearly():
    data = synthetic.inventory(500)
    assert inv.validate(data) == []
    derived = inv.derive(data)
    assert len(derived["hosts"]) == 500
    # web hosts share one proxy object: no per-host copies of the cluster lists
    web = [p for p in derived["hosts"].values() if "proxy" in p]
    assert len({id(p["proxy"]) for p in web}) == 1


def test_allow_lists_are_collapsed():
    assert inv.collapse(["10.0.0.1", "10.0.0.0", "10.0.0.2", "10.0.0.3", "10.0.0.9"]) == ["10.0.0.0/30", "10.0.0.9/32"]


def _with_blog(example, **user):
    """The example plus a database ``blog`` whose user ``wiki`` (also on ``wiki``) has these settings."""
    data = copy.deepcopy(example)
    data["databases"]["blog"] = {"users": {"wiki": {"roles": ["app"], "privileges": ["SELECT"], **user}}}
    return data


def test_databases_without_db_hosts_are_refused(example):
    data = copy.deepcopy(example)
    for host in ("db1-masterdb", "db2"):
        del data["hosts"][host]
    errors = inv.validate(data)
    assert any(e.startswith("databases: wiki defined but no host has the role 'db'") for e in errors), errors


def test_a_user_may_serve_several_databases_with_one_password(example):
    data = _with_blog(example)
    assert inv.validate(data) == []
    users = inv.derive(data)["hosts"]["db2"]["db"]["users"]
    assert users["wiki"]["grants"] == {
        "blog": ["SELECT"],
        "wiki": ["ALTER", "CREATE", "DELETE", "DROP", "INDEX", "INSERT", "SELECT", "UPDATE"],
    }
    client = inv.derive(data)["hosts"]["app1"]["db_client"]
    assert client["users"] == {"wiki": {"databases": ["blog", "wiki"], "ssl": True}}


def test_db_password_values_are_never_echoed(example):
    data = copy.deepcopy(example)
    data["secrets"]["db_users"]["wiki"] = "tooshort-wikipw"
    assert "tooshort-wikipw" not in str(inv.InventoryError(inv.validate(data)))


def test_databases_and_accounts_are_derived_for_db_hosts(example):
    hosts = inv.derive(example)["hosts"]
    for name in ("db1-masterdb", "db2"):  # any db host may become masterdb: both get everything
        db = hosts[name]["db"]
        assert db["databases"] == {"wiki": {"character_set": "utf8mb4", "collate": "utf8mb4_unicode_ci"}}
        assert db["users"] == {
            "wiki": {
                "roles": ["app"],
                "ssl": True,
                "hosts": ["10.10.10.51", "10.10.10.52"],
                "grants": {"wiki": ["ALTER", "CREATE", "DELETE", "DROP", "INDEX", "INSERT", "SELECT", "UPDATE"]},
            }
        }
        assert hosts[name]["secrets"]["db_users"] == {"wiki": "example-wiki-db-0123456789"}


def test_db_defaults_and_lowercase_privileges(example):
    data = copy.deepcopy(example)
    data["databases"]["wiki"] = {
        "users": {"wiki": {"roles": ["app", "frontend"], "privileges": ["select", "show  view"]}}
    }
    assert inv.validate(data) == []
    derived = inv.derive(data, {"frontend1": ["10.10.10.61"]})
    db = derived["hosts"]["db2"]["db"]
    assert db["databases"] == {"wiki": {"character_set": "utf8mb4", "collate": None}}
    assert db["users"]["wiki"]["ssl"] is True
    assert db["users"]["wiki"]["grants"] == {"wiki": ["SELECT", "SHOW VIEW"]}
    assert db["users"]["wiki"]["hosts"] == ["10.10.10.51", "10.10.10.52", "10.10.10.61"]
    # a host whose address is not known yet has no account (it gets one once the mine reports it)
    assert inv.derive(data)["hosts"]["db2"]["db"]["users"]["wiki"]["hosts"] == ["10.10.10.51", "10.10.10.52"]


def test_db_passwords_reach_only_the_hosts_that_need_them(example):
    data = copy.deepcopy(example)
    data["databases"]["search"] = {"users": {"indexer": {"roles": ["jobrunner"], "privileges": ["SELECT"]}}}
    data["secrets"]["db_users"]["indexer"] = "indexer-password-0123456789"
    data["hosts"]["job1"] = {"roles": ["jobrunner"], "address": "10.10.10.71"}
    hosts = inv.derive(data)["hosts"]
    app = hosts["app1"]
    assert app["secrets"]["db_users"] == {"wiki": "example-wiki-db-0123456789"}
    assert app["db_client"] == {
        "host": "masterdb.production.wpdn",
        "port": 3306,
        "users": {"wiki": {"databases": ["wiki"], "ssl": True}},
    }
    assert hosts["job1"]["secrets"]["db_users"] == {"indexer": "indexer-password-0123456789"}
    assert set(hosts["db1-masterdb"]["secrets"]["db_users"]) == {"wiki", "indexer"}
    for name in ("salt", "sessions1", "frontend1", "mail", "backup", "memcache-alpha1"):
        assert "db_users" not in hosts[name].get("secrets", {}), name
        assert "db_client" not in hosts[name], name
    assert "db_client" not in hosts["db2"]
    # the name clients connect to is the one the zone and /etc/hosts give masterdb
    names = {(r["name"], r["data"]) for r in hosts["salt"]["dns_zone"]["records"]}
    assert ("masterdb", "10.10.10.11") in names


def test_no_databases_no_db_keys(example):
    data = copy.deepcopy(example)
    del data["databases"]
    del data["secrets"]["db_users"]
    hosts = inv.derive(data)["hosts"]
    assert hosts["db2"]["db"]["users"] == {} and hosts["db2"]["db"]["databases"] == {}
    assert "db_users" not in hosts["db2"]["secrets"] and "db_client" not in hosts["app1"]


def test_salt_host_is_the_one_host_with_role_salt(example):
    assert inv.salt_host(example) == "salt"
    renamed = copy.deepcopy(example)
    renamed["hosts"]["master1"] = {**renamed["hosts"].pop("salt"), "roles": ["salt"]}
    assert inv.salt_host(renamed) == "master1"
    broken = copy.deepcopy(example)
    broken["level"] = "Bad Level"
    with pytest.raises(inv.InventoryError):
        inv.salt_host(broken)


def test_minion_pillar_reads_unmasked_and_refuses_a_minion_without_one():
    from salt.exceptions import CommandExecutionError

    calls = []

    def pillar_get(key, default, unmask=False):
        calls.append((key, unmask))
        return {"platform": {"name": "webplatform"}} if key == "rolestack" else default

    assert inv.minion_pillar(pillar_get) == {"platform": {"name": "webplatform"}}
    assert calls == [("rolestack", True)]
    with pytest.raises(CommandExecutionError, match="ext_pillar configured"):
        inv.minion_pillar(lambda key, default, unmask=False: {})


def test_derive_gives_each_host_the_texts_of_its_files(example):
    derived = inv.derive(example)
    hosts, common = derived["hosts"], derived["common"]
    platform = common["platform"]
    resolv_conf = base.resolv_conf_text(["10.10.10.2"], ["production.wpdn"])
    for name, pillar in hosts.items():
        assert pillar["dns"]["resolv_conf"] == resolv_conf
        ssh_config = pillar["jumpbox"]["ssh_config"] if name == "salt" else None
        assert pillar["banner"] == base.banners(platform, pillar["host"], ssh_config), name
        assert f" -- {name} (" in pillar["banner"]["issue_net"]
        assert (ssh_config is not None and ssh_config in pillar["banner"]["motd"]) is (name == "salt")
        firewall = pillar.get("firewall")
        if firewall:
            assert firewall["ruleset"] == kv.nft_ruleset(firewall["services"]), name
    assert "firewall" not in hosts["salt"]
    # one text per distinct list of services, shared; another list gets its own
    assert hosts["app1"]["firewall"]["ruleset"] is hosts["db2"]["firewall"]["ruleset"]
    assert hosts["memcache-alpha1"]["firewall"]["ruleset"] is hosts["memcache-alpha2"]["firewall"]["ruleset"]
    assert hosts["sessions1"]["firewall"]["ruleset"] != hosts["app1"]["firewall"]["ruleset"]
    # a minion the inventory does not know: the platform's banner without a host, the resolver, no firewall
    assert common["banner"] == base.banners(platform, None)
    assert common["dns"]["resolv_conf"] == resolv_conf and "firewall" not in common
    # the DNS server's address unknown: no resolv.conf (the base role leaves the file alone)
    del example["hosts"]["salt"]["address"]
    derived = inv.derive(example)
    assert derived["hosts"]["app1"]["dns"]["resolv_conf"] is None and derived["common"]["dns"]["resolv_conf"] is None
