"""
The states of ``_states/twemproxy.py`` through salt-factories' loader mock (``configure_loader_modules``, as
tests/unit/test_mariadb_replication_states.py does): ``__salt__`` holds a stand-in of the execution module
(``FakeTwemproxy``: the text ``render`` returns, a ``validate`` that reads the file it is given, as nutcracker -t
does, and refuses a text containing INVALID), ``__opts__`` the test mode. Every test runs with test=True and
without: with test=True a state with something to do reports result None and writes nothing. Files live in the
test's own directory; the real nutcracker runs in tests/functional/test_twemproxy.py.
"""

import grp
import os
import pathlib
import stat

import pytest
from salt.exceptions import CommandExecutionError

from _states import twemproxy as states

PASSWORD = "state-test-password"
CONFIG = (
    "sessions_redis:\n  listen: 127.0.0.1:6379\n  redis: true\n  redis_auth: {password}\n"
    "  servers:\n  - 10.10.10.21:6379:1 sessions1\n"
)
GROUP = grp.getgrgid(os.getgid()).gr_name


class FakeTwemproxy:
    def __init__(self):
        self.text = CONFIG.format(password=PASSWORD)
        self.defaults_text = 'DAEMON_OPTS="--stats-addr=127.0.0.1"\n'
        self.render_error = None
        self.validated = []  # (path, text seen)

    def salt(self):
        def render():
            if self.render_error:
                raise CommandExecutionError(self.render_error)
            return self.text

        def validate(path=None):
            with open(path) as handle:
                text = handle.read()
            self.validated.append((path, text))
            if "INVALID" in text:
                return {"valid": False, "message": f"nutcracker: configuration file '{path}' syntax is invalid"}
            return {"valid": True, "message": f"nutcracker: configuration file '{path}' syntax is ok"}

        return {"twemproxy.render": render, "twemproxy.defaults": lambda: self.defaults_text,
                "twemproxy.validate": validate}  # fmt: skip


@pytest.fixture(params=[False, True], ids=["apply", "test"], autouse=True)
def test_mode(request):
    return request.param


@pytest.fixture
def proxy():
    return FakeTwemproxy()


@pytest.fixture
def configure_loader_modules(proxy, test_mode):
    return {states: {"__salt__": proxy.salt(), "__opts__": {"test": test_mode, "id": "app1"}}}


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "nutcracker.yml")


def managed(path, **kwargs):
    return states.config_managed(name=path, group=GROUP, **kwargs)


def write(path, text, mode=0o640):
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def test_virtual_needs_the_execution_module():
    assert states.__virtual__() == "twemproxy"


def test_creates_the_config_after_validating_a_candidate(path, proxy, test_mode):
    ret = managed(path)
    assert "+  redis_auth: <redacted>" in ret["changes"]["diff"], ret
    assert PASSWORD not in str(ret)
    if test_mode:
        assert ret["result"] is None and "would be created" in ret["comment"], ret
        assert not os.path.exists(path) and proxy.validated == []
        return
    assert ret["result"] is True and "nutcracker -t accepted it first" in ret["comment"], ret
    assert pathlib.Path(path).read_text() == proxy.text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640 and os.stat(path).st_uid == 0
    (candidate, seen), (live, _) = proxy.validated
    assert candidate != path and os.path.dirname(candidate) == os.path.dirname(path) and seen == proxy.text
    assert live == path  # re-checked after writing
    assert os.listdir(os.path.dirname(path)) == ["nutcracker.yml"]  # no candidate left behind


def test_nothing_to_do(path, proxy):
    write(path, proxy.text)
    ret = managed(path)
    assert ret["result"] is True and ret["changes"] == {} and "already as wanted" in ret["comment"], ret
    assert proxy.validated == []


def test_an_invalid_config_never_replaces_the_live_one(path, proxy, test_mode):
    write(path, proxy.text)
    proxy.text = proxy.text + "INVALID: [\n"
    ret = managed(path)
    assert "+INVALID: [" in ret["changes"].get("diff", "") or not test_mode
    if test_mode:
        assert ret["result"] is None, ret
    else:
        assert ret["result"] is False and ret["changes"] == {}, ret
        assert "syntax is invalid" in ret["comment"] and "left as it was" in ret["comment"], ret
    assert pathlib.Path(path).read_text() == CONFIG.format(password=PASSWORD)  # the old file stays
    assert os.listdir(os.path.dirname(path)) == ["nutcracker.yml"]


def test_a_password_change_is_reported_without_the_values(path, proxy, test_mode):
    write(path, CONFIG.format(password="old-password-value"))
    ret = managed(path)
    assert ret["changes"]["diff"] == "(only redis passwords differ)", ret
    assert ret["changes"]["redis_auth"] == "changed for pools sessions_redis (values not shown)"
    assert PASSWORD not in str(ret) and "old-password-value" not in str(ret)
    assert ret["result"] is (None if test_mode else True), ret
    assert (PASSWORD in pathlib.Path(path).read_text()) is not test_mode


def test_mode_is_corrected_without_rewriting(path, proxy, test_mode):
    write(path, proxy.text, mode=0o644)
    ret = managed(path)
    assert ret["changes"] == {"mode": {"old": "0644", "new": "0640"}}, ret
    assert ret["result"] is (None if test_mode else True), ret
    assert stat.S_IMODE(os.stat(path).st_mode) == (0o644 if test_mode else 0o640)
    assert proxy.validated == []  # the content nutcracker runs did not change


def test_an_invalid_pillar_fails_in_both_modes(path, proxy):
    proxy.render_error = "invalid rolestack:proxy pillar:\n  - rolestack:proxy:pools:0:port: got a str"
    ret = managed(path)
    assert ret["result"] is False and "pools:0:port" in ret["comment"], ret
    assert not os.path.exists(path)


def test_a_bad_mode_is_refused(path):
    ret = managed(path, mode="rw-r-----")
    assert ret["result"] is False and "expected an octal mode" in ret["comment"], ret


def test_defaults_are_written_without_validation(tmp_path, proxy, test_mode):
    path = str(tmp_path / "nutcracker")
    ret = states.defaults_managed(name=path, group=GROUP)
    assert ret["result"] is (None if test_mode else True), ret
    assert "+DAEMON_OPTS=" in ret["changes"]["diff"]
    assert os.path.exists(path) is not test_mode
    assert proxy.validated == []
    if not test_mode:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        assert states.defaults_managed(name=path, group=GROUP)["changes"] == {}
