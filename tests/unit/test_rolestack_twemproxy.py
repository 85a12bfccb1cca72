"""
The twemproxy util (``_utils/rolestack_twemproxy.py``): the pillar's validation (key path, type, expected; never a
secret's value), the nutcracker YAML, the service options, ``nutcracker -t``'s verdict, the stats and health.
The real nutcracker runs in tests/functional/test_twemproxy.py.
"""

import copy
import json
import pathlib

import pytest
import rolestack_twemproxy as tw
import yaml

SECRET = "s3cret-sessions-password"
CACHE_SECRET = "another-cache-password"
SECRETS = {"sessions_redis_password": SECRET, "cache_redis_password": CACHE_SECRET}


def server(name, address, port):
    return {"name": name, "address": address, "port": port}


PROXY = {
    "stats_port": 22222,
    "pools": [
        {"name": "sessions_redis", "role": "sessions", "kind": "redis", "port": 6379,
         "servers": [server("sessions1", "10.10.10.21", 6379)], "auth": "sessions_redis_password"},
        {"name": "sessions_memcached", "role": "sessions", "kind": "memcached", "port": 11211,
         "servers": [server("sessions1", "10.10.10.21", 11211)], "auth": None},
        {"name": "memcache_alpha", "role": "memcache", "kind": "memcached", "port": 11212,
         "servers": [server("memcache-alpha1", "10.10.10.31", 11211), server("memcache-alpha2", "10.10.10.32", 11211)],
         "auth": None},
        {"name": "redis_beta", "role": "redis", "kind": "redis", "port": 6380,
         "servers": [server("redis-beta1", "10.10.10.41", 6379)], "auth": "cache_redis_password"},
    ],
}  # fmt: skip


def proxy(**changes):
    data = copy.deepcopy(PROXY)
    data.update(changes)
    return data


def test_the_example_is_valid():
    assert tw.validate(PROXY, SECRETS) == []


def test_render_one_pool_per_entry_on_loopback():
    config = yaml.safe_load(tw.render(PROXY, SECRETS))
    assert list(config) == ["sessions_redis", "sessions_memcached", "memcache_alpha", "redis_beta"]
    redis = config["sessions_redis"]
    assert redis["listen"] == "127.0.0.1:6379"
    assert (redis["hash"], redis["distribution"]) == ("murmur", "ketama")
    assert redis["redis"] is True and redis["redis_auth"] == SECRET
    assert redis["servers"] == ["10.10.10.21:6379:1 sessions1"]
    assert config["redis_beta"]["redis_auth"] == CACHE_SECRET
    memcached = config["sessions_memcached"]
    assert "redis" not in memcached and "redis_auth" not in memcached
    assert config["memcache_alpha"]["servers"] == ["10.10.10.31:11211:1 memcache-alpha1", "10.10.10.32:11211:1 memcache-alpha2"]  # fmt: skip
    assert config["memcache_alpha"]["listen"] == "127.0.0.1:11212"


def test_tuning_per_pool_role():
    config = yaml.safe_load(tw.render(PROXY, SECRETS))
    for name in ("sessions_redis", "sessions_memcached"):
        assert config[name]["auto_eject_hosts"] is False, name  # a dead sessions server fails, no silent logout
        assert {k: config[name][k] for k in tw.SESSIONS_TUNING} == tw.SESSIONS_TUNING
    for name in ("memcache_alpha", "redis_beta"):
        assert config[name]["auto_eject_hosts"] is True, name
        assert {k: config[name][k] for k in tw.CACHE_TUNING} == tw.CACHE_TUNING
    for settings in config.values():
        assert settings["timeout"] > 0 and settings["server_retry_timeout"] > 0 and settings["server_failure_limit"] > 0


def test_a_password_with_yaml_characters_survives():
    tricky = "*p: w'd\" #x"
    config = yaml.safe_load(tw.render(PROXY, dict(SECRETS, sessions_redis_password=tricky)))
    assert config["sessions_redis"]["redis_auth"] == tricky


def test_render_is_deterministic():
    assert tw.render(PROXY, SECRETS) == tw.render(copy.deepcopy(PROXY), dict(SECRETS))


def test_an_empty_pool_list_renders_an_empty_config():
    assert yaml.safe_load(tw.render({"stats_port": 22222, "pools": []}, {})) in ({}, None)


def _broken(mutate):
    data = proxy()
    mutate(data)
    return data


BROKEN = [
    ("not_a_mapping", lambda d: None, "rolestack:proxy: got a list", []),
    ("unknown_top_key", lambda d: d.update(extra=1), "rolestack:proxy:extra: unknown key", None),
    ("stats_port_str", lambda d: d.update(stats_port="22222"), "rolestack:proxy:stats_port: got a str", None),
    ("pools_not_list", lambda d: d.update(pools={}), "rolestack:proxy:pools: got a dict", None),
    ("pool_not_mapping", lambda d: d["pools"].append("x"), "rolestack:proxy:pools:4: got a str", None),
    ("missing_servers", lambda d: d["pools"][0].pop("servers"), "rolestack:proxy:pools:0:servers: missing", None),
    ("bad_role", lambda d: d["pools"][1].update(role="db"), "rolestack:proxy:pools:1:role: got a str", None),
    ("bad_kind", lambda d: d["pools"][1].update(kind="mysql"), "rolestack:proxy:pools:1:kind: got a str", None),
    ("bad_name", lambda d: d["pools"][1].update(name="Bad Name"), "rolestack:proxy:pools:1:name: got a str", None),
    ("port_bool", lambda d: d["pools"][1].update(port=True), "rolestack:proxy:pools:1:port: got a bool", None),
    ("port_range", lambda d: d["pools"][1].update(port=70000), "rolestack:proxy:pools:1:port: got an int", None),
    ("dup_port", lambda d: d["pools"][3].update(port=6379), "rolestack:proxy:pools:3:port: port 6379 already used", None),
    ("dup_name", lambda d: d["pools"][3].update(name="sessions_redis"), "pools:3:name: pool name 'sessions_redis'", None),
    ("stats_port_clash", lambda d: d["pools"][3].update(port=22222), "pools:3:port: 22222 is the stats port", None),
    ("no_servers", lambda d: d["pools"][2].update(servers=[]), "rolestack:proxy:pools:2:servers: got a list", None),
    ("server_address", lambda d: d["pools"][2]["servers"][1].update(address="10.1.2"), "pools:2:servers:1:address: got a str", None),
    ("server_port", lambda d: d["pools"][2]["servers"][0].update(port="11211"), "pools:2:servers:0:port: got a str", None),
    ("server_name", lambda d: d["pools"][2]["servers"][0].update(name="a b"), "pools:2:servers:0:name: got a str", None),
    ("server_unknown", lambda d: d["pools"][2]["servers"][0].update(weight=2), "pools:2:servers:0:weight: unknown key", None),
    ("dup_server", lambda d: d["pools"][2]["servers"][1].update(name="memcache-alpha1"), "listed twice", None),
    ("memcached_auth", lambda d: d["pools"][1].update(auth="sessions_redis_password"), "pools:1:auth: got a str of length 23, expected null", None),
    ("redis_no_auth", lambda d: d["pools"][0].update(auth=None), "pools:0:auth: got a NoneType", None),
    ("unknown_secret", lambda d: d["pools"][0].update(auth="nope"), "the secret 'nope' is not in rolestack:secrets", None),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "expected", "whole"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_every_problem_names_the_key_path_type_and_expectation(mutate, expected, whole):
    data = whole if whole is not None else _broken(mutate)
    problems = tw.validate(data, SECRETS)
    assert any(expected in problem for problem in problems), problems
    assert all("expected" in problem for problem in problems), problems
    with pytest.raises(tw.ProxyConfigError) as raised:
        tw.render(data, SECRETS)
    assert expected in str(raised.value)


@pytest.mark.parametrize("value", ["", 12345, "two\nlines", None])
def test_a_bad_secret_is_named_by_type_never_by_value(value):
    secrets = dict(SECRETS, sessions_redis_password=value)
    problems = tw.validate(PROXY, secrets)
    assert any(p.startswith("rolestack:secrets:sessions_redis_password: got") for p in problems), problems
    assert CACHE_SECRET not in str(problems) and "two\nlines" not in str(problems)


def test_errors_never_quote_a_secret_put_in_the_wrong_place():
    data = proxy()
    data["pools"][0]["password"] = SECRET
    data["pools"][0]["servers"][0]["name"] = SECRET + " x"
    problems = tw.validate(data, SECRETS)
    assert problems and SECRET not in str(problems)


def test_several_problems_reported_at_once():
    data = proxy(stats_port=0)
    data["pools"][1]["kind"] = "x"
    assert len(tw.validate(data, SECRETS)) >= 2


def test_daemon_opts_keep_stats_on_loopback():
    assert tw.daemon_opts(22222) == (
        "--conf-file=/etc/nutcracker/nutcracker.yml --stats-addr=127.0.0.1 --stats-port=22222 --stats-interval=2000 "
        "--verbose=4"
    )
    assert 'DAEMON_OPTS="--conf-file=' in tw.render_defaults(22223) and "--stats-port=22223" in tw.render_defaults(
        22223
    )
    assert tw.stats_port(PROXY) == 22222 and tw.stats_port({"stats_port": "x"}) == 22222
    assert tw.stats_port(proxy(stats_port=23000)) == 23000


def test_log_level_keeps_errors_and_warnings_below_notice():
    # nutcracker: log_error is level 1 (LOG_ALERT), log_warn 4 (LOG_WARN); 5 (LOG_NOTICE, its default) costs every
    # request a getpeername(2) and a formatted address for a debug-build-only log line
    assert tw.LOG_LEVEL == 4
    assert f"--verbose={tw.LOG_LEVEL}" in tw.daemon_opts()
    assert f"--verbose={tw.LOG_LEVEL}" in tw.render_defaults()


def test_check_command_and_verdict():
    assert tw.check_command("/tmp/x.yml") == ["nutcracker", "--test-conf", "--conf-file=/tmp/x.yml"]
    ok = tw.verdict(0, "", "nutcracker: configuration file '/tmp/x.yml' syntax is ok\n")
    assert ok == (True, "nutcracker: configuration file '/tmp/x.yml' syntax is ok")
    bad = tw.verdict(1, "", "nutcracker: configuration file '/tmp/x.yml' syntax is invalid\n")
    assert bad[0] is False and "syntax is invalid" in bad[1]
    assert tw.verdict(1, "", "") == (False, "nutcracker -t exited with 1")
    assert tw.verdict(0, "", "")[0] is False  # no verdict printed: not a valid config


STATS = {
    "service": "nutcracker", "source": "app1", "version": "0.5.0", "uptime": 100, "timestamp": 1_000_000,
    "total_connections": 10, "curr_connections": 2,
    "memcache_alpha": {
        "client_eof": 8, "client_err": 1, "client_connections": 2, "server_ejects": 1, "forward_error": 3,
        "fragments": 0,
        "memcache-alpha1": {"server_eof": 0, "server_err": 0, "server_timedout": 0, "server_connections": 1,
                            "server_ejected_at": 0, "requests": 8, "responses": 8},
        "memcache-alpha2": {"server_eof": 1, "server_err": 2, "server_timedout": 1, "server_connections": 0,
                            "server_ejected_at": 1_000_000 * 1_000_000 - 5_000_000, "requests": 4, "responses": 0},
    },
    "sessions_redis": {
        "client_eof": 0, "client_err": 0, "client_connections": 0, "server_ejects": 0, "forward_error": 0,
        "fragments": 0,
        "sessions1": {"server_eof": 0, "server_err": 0, "server_timedout": 0, "server_connections": 1,
                      "server_ejected_at": 0, "requests": 0, "responses": 0},
    },
}  # fmt: skip


def test_parse_stats_per_pool_and_server():
    report = tw.parse_stats(json.dumps(STATS))
    assert report["uptime"] == 100 and report["curr_connections"] == 2
    assert set(report["pools"]) == {"memcache_alpha", "sessions_redis"}
    alpha = report["pools"]["memcache_alpha"]
    assert alpha["client_err"] == 1 and alpha["server_ejects"] == 1 and alpha["client_connections"] == 2
    assert alpha["servers"]["memcache-alpha2"]["server_err"] == 2
    assert alpha["servers"]["memcache-alpha1"]["server_connections"] == 1
    with pytest.raises(ValueError):
        tw.parse_stats("[1]")
    with pytest.raises(ValueError):
        tw.parse_stats("not json")


def test_health_reports_ejected_servers_and_missing_pools():
    report = tw.parse_stats(STATS)
    result = tw.health(report, PROXY, reachable={("memcache_alpha", "memcache-alpha1"): True})
    alpha = result["pools"]["memcache_alpha"]
    assert alpha["servers"]["memcache-alpha2"]["state"] == "ejected"
    assert alpha["servers"]["memcache-alpha1"]["state"] == "up"
    assert alpha["servers_ejected"] == ["memcache-alpha2"] and alpha["servers_up"] == 1
    assert alpha["errors"] == 4 and alpha["healthy"] is False
    assert result["pools"]["sessions_redis"]["healthy"] is True
    assert result["pools"]["redis_beta"]["healthy"] is False and "not in nutcracker's stats" in result["pools"]["redis_beta"]["problem"]  # fmt: skip
    assert result["healthy"] is False


def test_an_ejection_older_than_the_retry_timeout_is_over():
    stats = copy.deepcopy(STATS)
    stats["memcache_alpha"]["memcache-alpha2"]["server_ejected_at"] = (1_000_000 - 31) * 1_000_000
    alpha = tw.health(tw.parse_stats(stats), PROXY)["pools"]["memcache_alpha"]
    assert alpha["servers"]["memcache-alpha2"]["state"] == "up"


def test_an_unreachable_server_is_down():
    only_sessions = proxy(pools=[PROXY["pools"][0]])
    result = tw.health(tw.parse_stats(STATS), only_sessions, reachable={("sessions_redis", "sessions1"): False})
    assert result["pools"]["sessions_redis"]["servers"]["sessions1"]["state"] == "down"
    assert result["pools"]["sessions_redis"]["servers_down"] == ["sessions1"] and result["healthy"] is False
    assert tw.health(tw.parse_stats(STATS), only_sessions)["healthy"] is True


def test_diffs_never_show_a_password():
    old = tw.render(PROXY, dict(SECRETS, sessions_redis_password="old-one"))
    new = tw.render(PROXY, SECRETS)
    assert "redis_auth: <redacted>" in tw.redact(new) and SECRET not in tw.redact(new)
    assert tw.diff(old, new, "/etc/nutcracker/nutcracker.yml") == ""  # only a password differs
    assert tw.changed_auth(old, new) == ["sessions_redis"]
    assert tw.changed_auth(None, new) == ["redis_beta", "sessions_redis"]
    assert tw.changed_auth("::: not yaml [", new) == ["redis_beta", "sessions_redis"]
    added = tw.diff(None, new, "/x.yml")
    assert added.startswith("--- /dev/null\n+++ /x.yml") and SECRET not in added and CACHE_SECRET not in added


def test_write_candidate_is_private_before_it_holds_the_text(tmp_path):
    live = tmp_path / "nutcracker.yml"
    candidate = tw.write_candidate(str(live), "text\n", "root", "root", 0o640)
    assert candidate.startswith(str(tmp_path) + "/.nutcracker.yml.") and pathlib.Path(candidate).read_text() == "text\n"
    assert tw.file_facts(candidate)[1:] == (0o640, "root", "root")
    assert tw.file_facts(str(live)) == (None, None, None, None)
    with pytest.raises(KeyError):
        tw.write_candidate(str(live), "x", "root", "no-such-group-here", 0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == [pathlib.Path(candidate).name]
