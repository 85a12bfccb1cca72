"""
The cache runner in a real master, synced from the repository with its util (``_utils/rolestack_kv.py``): it loads,
refuses the sessions role before asking any minion, and targets a cluster by the members' pillar (no minion here
has a cache role: nothing matches, and the flush is reported failed, not silently done). A real flush of real
servers is in tests/functional/test_kv_servers.py (private servers; a minion here would reach 127.0.0.1:11211).
"""


def test_the_cache_runner_loads_with_its_util(salt_master):
    ret = salt_master.salt_run_cli().run("doc.runner")
    assert ret.returncode == 0 and isinstance(ret.data, dict), ret
    assert "CLI Example" in ret.data["cache.flush"], ret.data.get("cache.flush")


def test_the_sessions_are_never_flushed(salt_master):
    ret = salt_master.salt_run_cli(timeout=60).run("cache.flush", "sessions", "default")
    assert ret.returncode != 0, ret
    assert "the sessions role is never flushed" in ret.stdout + ret.stderr, ret


def test_a_cluster_without_answering_members_is_not_flushed(salt_master, minions):
    ret = salt_master.salt_run_cli(timeout=120).run("cache.flush", "memcache", "alpha", timeout=5)
    assert isinstance(ret.data, dict), ret
    assert ret.data["target"] == "I@rolestack:memcache:cluster:alpha"
    assert ret.data["flushed"] == [] and not ret.data["ok"], ret.data
    assert ret.data["failed"] == {"(none)": "no minion matched I@rolestack:memcache:cluster:alpha"}
