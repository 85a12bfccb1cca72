"""
The cache runner's flush over simulated cluster members (a stand-in for the master's LocalClient); its decisions
are tested on their own in tests/unit/test_rolestack_kv.py.
"""

import importlib.util

import pytest
from salt.exceptions import CommandExecutionError

from tests.support.paths import REPO


def _load_runner():
    spec = importlib.util.spec_from_file_location("cache_runner", REPO / "_runners" / "cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {"__role": "master"}
    return module


class FakeMembers:
    """Cluster members as LocalClient reaches them: each answers rolestack_kv.flush with a return or an error."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []
        self.destroyed = False

    def cmd(self, tgt, fun, arg=(), tgt_type="glob", kwarg=None, full_return=False, **_):
        self.calls.append((tgt, fun, list(arg), tgt_type, kwarg))
        return {minion: answer for minion, answer in self.answers.items() if answer is not None}

    def destroy(self):
        self.destroyed = True


@pytest.fixture
def runner(monkeypatch):
    module = _load_runner()
    assert module.__virtual__() == "cache"

    def members(answers):
        client = FakeMembers(answers)
        monkeypatch.setattr(module, "_local_client", lambda: client)
        return client

    module.members = members
    return module


def _ok(members):
    return {"ret": {"flushed": ["memcache_memcached"], "members": members}, "retcode": 0}


def test_flush_reaches_every_member_of_the_cluster_by_pillar(runner):
    names = ["memcache-alpha1", "memcache-alpha2"]
    client = runner.members({name: _ok(names) for name in names})
    summary = runner.flush("memcache", "alpha")
    assert summary["ok"] and summary["flushed"] == names and summary["failed"] == {}
    assert client.calls == [
        ("I@rolestack:memcache:cluster:alpha", "rolestack_kv.flush", [], "compound", {"role": "memcache"})
    ]
    assert client.destroyed


def test_a_silent_or_failing_member_makes_the_flush_fail(runner):
    names = ["memcache-alpha1", "memcache-alpha2", "memcache-alpha3"]
    runner.members(
        {
            "memcache-alpha1": _ok(names),
            "memcache-alpha2": {"ret": "ERROR: memcache_memcached: cannot connect to 127.0.0.1:11211", "retcode": 1},
            "memcache-alpha3": None,  # did not answer
        }
    )
    summary = runner.flush("memcache", "alpha")
    assert not summary["ok"] and summary["flushed"] == ["memcache-alpha1"]
    assert set(summary["failed"]) == {"memcache-alpha2", "memcache-alpha3"}


@pytest.mark.parametrize(("role", "cluster"), [("sessions", "default"), ("db", "alpha"), ("redis", "Beta")])
def test_refusals_reach_no_minion(runner, role, cluster):
    client = runner.members({})
    with pytest.raises(CommandExecutionError):
        runner.flush(role, cluster)
    assert client.calls == []


def test_only_on_a_master():
    module = _load_runner()
    module.__opts__ = {"__role": "minion"}
    assert module.__virtual__()[0] is False
