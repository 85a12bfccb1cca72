"""
The state of ``_states/rolestack_elastic.py`` through salt-factories' loader mock (``configure_loader_modules``):
``__salt__`` holds a stand-in of the execution module (a registered repository as wanted, missing, or one that
stays different after a PUT; a node that refuses), ``__opts__`` the test mode. Every test runs with test=True and
without: with test=True a state with something to do reports result None and registers nothing. The real client
against the HTTP stand-in: tests/functional/test_elastic_snapshots.py.
"""

import pytest
from salt.exceptions import CommandExecutionError

from _states import rolestack_elastic as states

LOCATION = "/mnt/elastic-snapshots/main"
WANTED = {"type": "fs", "settings": {"location": LOCATION, "compress": True}}


class FakeModule:
    def __init__(self):
        self.changes = {"repository": {"old": None, "new": WANTED}}
        self.sticks = True  # a PUT makes it as wanted
        self.refuse = None
        self.puts = []

    def salt(self):
        def changes(**kwargs):
            if self.refuse:
                raise CommandExecutionError(self.refuse)
            return dict(self.changes)

        def register(**kwargs):
            self.puts.append(kwargs)
            if self.sticks:
                self.changes = {}
            return {"acknowledged": True}

        return {"rolestack_elastic.repository_changes": changes, "rolestack_elastic.register_repository": register}


@pytest.fixture(params=[False, True], ids=["apply", "test"], autouse=True)
def test_mode(request):
    return request.param


@pytest.fixture
def module():
    return FakeModule()


@pytest.fixture
def configure_loader_modules(module, test_mode):
    return {states: {"__salt__": module.salt(), "__opts__": {"test": test_mode}}}


def test_a_repository_registered_as_wanted_changes_nothing(module):
    module.changes = {}
    ret = states.repository_registered("backup", location=LOCATION)
    assert ret["result"] is True and ret["changes"] == {} and module.puts == []
    assert ret["comment"] == "snapshot repository backup is registered as wanted"


def test_a_missing_repository_is_registered_and_checked_again(module, test_mode):
    ret = states.repository_registered("backup", location=LOCATION)
    assert ret["changes"] == {"repository": {"old": None, "new": WANTED}}
    if test_mode:
        assert ret["result"] is None and module.puts == [] and "would be registered" in ret["comment"]
    else:
        assert ret["result"] is True and ret["comment"] == "snapshot repository backup registered"
        assert module.puts == [{"name": "backup", "location": LOCATION, "compress": True, "url": None}]


def test_a_repository_still_different_after_the_put_fails(module, test_mode):
    module.changes = {"settings.location": {"old": "/old", "new": LOCATION}}
    module.sticks = False
    ret = states.repository_registered("backup", location=LOCATION)
    if test_mode:
        assert ret["result"] is None and module.puts == []
    else:
        assert ret["result"] is False and len(module.puts) == 1
        assert ret["comment"] == "snapshot repository backup was registered but still differs: settings.location"


def test_a_refusal_is_the_states_one_line_comment(module):
    module.refuse = "rolestack_elastic.repository_changes: ElasticSearch at http://127.0.0.1:9200: GET x: refused"
    ret = states.repository_registered("backup", location=LOCATION)
    assert ret["result"] is False and ret["comment"] == module.refuse and module.puts == []
