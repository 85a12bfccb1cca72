"""
``_utils/rolestack_systemd.py`` (what ``systemctl show`` says, and when salt's service states would change nothing)
and ``_states/rolestack_service.py`` through salt-factories' loader mock: ``__salt__`` holds a stand-in of
``cmd.run_all`` answering ``systemctl show``, ``__states__`` a stand-in of salt's service states. Every state test
runs with test=True and without. The real services run through these states in the lab (every e2e highstate).
"""

import pytest
import rolestack_systemd as systemd

from _states import rolestack_service as states

ACTIVE_ENABLED = {"LoadState": "loaded", "ActiveState": "active", "UnitFileState": "enabled", "NeedDaemonReload": "no"}


def show_text(props):
    return "".join(f"{key}={value}\n" for key, value in props.items())


def test_the_query_names_a_service_unit_and_every_property():
    argv = systemd.show_argv("ssh")
    assert argv[:3] == ["systemctl", "show", "--no-pager"] and argv[-2:] == ["--", "ssh.service"]
    assert "--property=LoadState,ActiveState,UnitFileState,NeedDaemonReload" in argv
    assert systemd.show_argv("rolestack-firewall.service")[-1] == "rolestack-firewall.service"


def test_parse_keeps_the_asked_properties_only():
    text = show_text(ACTIVE_ENABLED) + "Description=x=y\nnoise\n"
    assert systemd.parse_show(text) == ACTIVE_ENABLED
    assert systemd.parse_show("") == {} and systemd.parse_show(None) == {}


@pytest.mark.parametrize(
    ("change", "enable", "settled"),
    [
        ({}, True, True),
        ({}, None, True),
        ({}, False, False),  # enabled, asked disabled
        ({"UnitFileState": "disabled"}, True, False),
        ({"UnitFileState": "disabled"}, False, True),
        ({"UnitFileState": "static"}, True, False),  # left to salt: it has its own view of static units
        ({"ActiveState": "activating"}, None, False),
        ({"ActiveState": "failed"}, None, False),
        ({"NeedDaemonReload": "yes"}, True, False),  # a changed unit file: salt reloads systemd
        ({"LoadState": "masked"}, None, False),
        ({"LoadState": "not-found"}, None, False),
    ],
)
def test_running_is_settled_only_when_nothing_would_change(change, enable, settled):
    assert systemd.running_settled({**ACTIVE_ENABLED, **change}, enable) is settled


def test_dead_and_enabled_verdicts():
    stopped = {**ACTIVE_ENABLED, "ActiveState": "inactive", "UnitFileState": "disabled"}
    assert systemd.dead_settled(stopped, False) and systemd.dead_settled(stopped, None)
    assert systemd.dead_settled({**stopped, "ActiveState": "failed"}, False)
    assert not systemd.dead_settled(stopped, True)
    assert not systemd.dead_settled(ACTIVE_ENABLED, None)
    assert not systemd.dead_settled({}, None)  # systemctl said nothing: salt decides
    assert systemd.enabled_settled(ACTIVE_ENABLED)
    assert not systemd.enabled_settled({**ACTIVE_ENABLED, "UnitFileState": "disabled"})
    assert not systemd.enabled_settled({**ACTIVE_ENABLED, "NeedDaemonReload": "yes"})


def _test_mode_of(module):
    return module.__opts__["test"]


class FakeSystem:
    def __init__(self):
        self.props = dict(ACTIVE_ENABLED)
        self.retcode = 0
        self.enable_works = True
        self.queries = []
        self.calls = []

    def run_all(self, argv, **kwargs):
        assert kwargs["python_shell"] is False
        self.queries.append(argv)
        return {"retcode": self.retcode, "stdout": show_text(self.props), "stderr": ""}

    def enable(self, name):
        self.calls.append(("enable", name, {}))
        if self.enable_works:
            self.props["UnitFileState"] = "enabled"
        return True

    def state(self, fun):
        def call(name, **kwargs):
            self.calls.append((fun, name, kwargs))
            # salt enables what systemctl is-enabled calls disabled (exit 1), not what it calls indirect (exit 0)
            wants_enabled = fun == "enabled" or (fun == "running" and kwargs.get("enable"))
            if wants_enabled and self.props["UnitFileState"] == "disabled" and not _test_mode_of(states):
                self.props["UnitFileState"] = "enabled"
            return {"name": name, "result": True, "changes": {fun: name}, "comment": f"salt's {fun}"}

        return call


@pytest.fixture(params=[False, True], ids=["apply", "test"], autouse=True)
def test_mode(request):
    return request.param


@pytest.fixture
def system():
    return FakeSystem()


@pytest.fixture
def configure_loader_modules(system, test_mode):
    return {
        states: {
            "__salt__": {
                "cmd.run_all": system.run_all,
                "service.systemctl_reload": lambda: True,
                "service.enable": system.enable,
            },
            "__states__": {f"service.{fun}": system.state(fun) for fun in ("running", "dead", "enabled", "mod_watch")},
            "__opts__": {"test": test_mode},
        }
    }


def test_a_running_enabled_service_is_not_handed_to_salt(system):
    ret = states.running("ssh", enable=True, reload=True)
    assert ret == {"name": "ssh", "result": True, "changes": {}, "comment": "The service ssh is already running"}
    assert system.calls == [] and len(system.queries) == 1


@pytest.mark.parametrize(
    "change", [{"ActiveState": "inactive"}, {"UnitFileState": "disabled"}, {"NeedDaemonReload": "yes"}]
)
def test_anything_else_is_salts_state_with_every_argument(system, change):
    system.props.update(change)
    ret = states.running("ssh", enable=True, reload=True, init_delay=2)
    assert ret["changes"] == {"running": "ssh"}
    assert system.calls == [("running", "ssh", {"enable": True, "reload": True, "init_delay": 2})]


def test_systemctl_failing_or_absent_leaves_it_to_salt(system, configure_loader_modules):
    system.retcode = 1
    states.running("ssh", enable=True)
    assert [call[0] for call in system.calls] == ["running"]
    del states.__salt__["service.systemctl_reload"]  # not systemd: not even asked
    system.queries.clear()
    states.dead("rsync", enable=False)
    assert system.queries == [] and [call[0] for call in system.calls] == ["running", "dead"]


def test_dead_and_enabled(system):
    system.props.update(ActiveState="inactive", UnitFileState="disabled")
    assert states.dead("rsync", enable=False)["changes"] == {}
    assert states.dead("rsync", enable=True)["changes"] == {"dead": "rsync"}
    system.props.update(UnitFileState="enabled")
    assert states.enabled("rolestack-firewall")["changes"] == {}
    system.props.update(UnitFileState="disabled")
    assert states.enabled("rolestack-firewall")["changes"] == {"enabled": "rolestack-firewall"}


def test_a_watch_is_salts_mod_watch(system):
    ret = states.mod_watch("ssh", sfun="running", reload=True)
    assert ret["changes"] == {"mod_watch": "ssh"}
    assert system.calls == [("mod_watch", "ssh", {"sfun": "running", "reload": True})]


def test_a_unit_salt_calls_enabled_that_no_boot_starts_gets_enabled(system, test_mode):
    # xinetd's native unit next to its SysV script with K links: systemctl is-enabled exits 0 ("indirect")
    system.props.update(UnitFileState="indirect")
    ret = states.running("xinetd", enable=True, reload=True)
    if test_mode:
        assert ret["result"] is None and "would be enabled at boot" in ret["comment"]
        assert [call[0] for call in system.calls] == ["running"]
    else:
        assert ret["changes"]["xinetd"] == {"enabled_at_boot": True} and ret["changes"]["running"] == "xinetd"
        assert [call[0] for call in system.calls] == ["running", "enable"]
        assert states.running("xinetd", enable=True)["changes"] == {}  # the next run: nothing to do


def test_enabling_that_changes_nothing_is_not_reported(system, test_mode):
    if test_mode:
        pytest.skip("test mode enables nothing")
    system.props.update(UnitFileState="indirect")
    system.enable_works = False
    ret = states.enabled("some-socket-activated")
    assert ret["changes"] == {"enabled": "some-socket-activated"}  # salt's own answer, nothing added
    assert states.running("xinetd", enable=None)["changes"] == {}  # enable not asked: never enabled
