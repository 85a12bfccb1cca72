"""
The argument and pillar checks of ``_modules/twemproxy.py`` (salt-factories' loader mock: ``pillar.get`` answers
from a dict, as a minion would with ``unmask=True``). The real nutcracker, stats port and health are in
tests/functional/test_twemproxy.py.
"""

import pytest
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

from _modules import twemproxy

SECRET = "module-test-password"
PROXY = {
    "stats_port": 22222,
    "pools": [{"name": "sessions_redis", "role": "sessions", "kind": "redis", "port": 6379,
               "servers": [{"name": "sessions1", "address": "10.10.10.21", "port": 6379}],
               "auth": "sessions_redis_password"}],
}  # fmt: skip


class Pillar:
    def __init__(self):
        self.data = {"rolestack:proxy": PROXY, "rolestack:secrets": {"sessions_redis_password": SECRET}}
        self.asked = []

    def get(self, key, default=None, unmask=None):
        self.asked.append((key, unmask))
        return self.data.get(key, default)


@pytest.fixture
def pillar():
    return Pillar()


@pytest.fixture
def configure_loader_modules(pillar):
    return {twemproxy: {"__salt__": {"pillar.get": pillar.get}, "__opts__": {"id": "app1"}}}


def test_render_reads_the_pillar_unmasked(pillar):
    assert f"redis_auth: {SECRET}" in twemproxy.render()
    assert ("rolestack:secrets", True) in pillar.asked and ("rolestack:proxy", True) in pillar.asked


def test_a_host_without_proxy_pillar_is_refused(pillar):
    del pillar.data["rolestack:proxy"]
    for function in (twemproxy.render, twemproxy.defaults, twemproxy.health):
        with pytest.raises(CommandExecutionError, match="no rolestack:proxy pillar for app1"):
            function()


def test_an_invalid_pillar_names_the_key_never_the_secret(pillar):
    pillar.data["rolestack:secrets"] = {"sessions_redis_password": SECRET + "\n"}
    with pytest.raises(CommandExecutionError) as raised:
        twemproxy.render()
    assert "rolestack:secrets:sessions_redis_password: got a str of length" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_defaults_take_the_stats_port_from_the_pillar(pillar):
    pillar.data["rolestack:proxy"] = dict(PROXY, stats_port=23456)
    assert "--stats-addr=127.0.0.1 --stats-port=23456" in twemproxy.defaults()


@pytest.mark.parametrize("port", ["x", 0, 70000, None.__class__])
def test_stats_refuses_a_bad_port(port):
    with pytest.raises(SaltInvocationError, match="expected a port number"):
        twemproxy.stats(port=port)


@pytest.mark.parametrize("path", ["relative.yml", "/nonexistent/nutcracker.yml"])
def test_validate_refuses_a_bad_path(path):
    with pytest.raises(SaltInvocationError):
        twemproxy.validate(path=path)
