"""
The state of ``_states/rolestack_kv.py`` through salt-factories' loader mock (``configure_loader_modules``, as
tests/unit/test_twemproxy_states.py does): ``__salt__`` holds a stand-in of the execution module (a live table
that is or is not the file's, a load that succeeds or is refused), ``__opts__`` the test mode. Every test runs with
test=True and without: with test=True a state with something to do reports result None and loads nothing. The
real nft runs in the lab (tests/e2e/test_8_zz_security.py deletes the table; the highstate loads it again).
"""

import pytest
from salt.exceptions import CommandExecutionError

from _states import rolestack_kv as states

RULESET = "/etc/rolestack/firewall.nft"


class FakeFirewall:
    def __init__(self):
        self.live_matches = False
        self.refuse = None
        self.loads = []

    def salt(self):
        def in_sync(path):
            return self.live_matches

        def load(path):
            if self.refuse:
                raise CommandExecutionError(self.refuse)
            self.loads.append(path)
            self.live_matches = True
            return True

        return {"rolestack_kv.firewall_in_sync": in_sync, "rolestack_kv.firewall_load": load}


@pytest.fixture(params=[False, True], ids=["apply", "test"], autouse=True)
def test_mode(request):
    return request.param


@pytest.fixture
def firewall():
    return FakeFirewall()


@pytest.fixture
def configure_loader_modules(firewall, test_mode):
    return {states: {"__salt__": firewall.salt(), "__opts__": {"test": test_mode}}}


def test_a_live_table_that_is_the_files_changes_nothing(firewall):
    firewall.live_matches = True
    ret = states.firewall_loaded(RULESET)
    assert ret["result"] is True and ret["changes"] == {} and firewall.loads == []


def test_a_live_table_that_differs_is_loaded_and_checked_again(firewall, test_mode):
    ret = states.firewall_loaded(RULESET)
    assert ret["changes"] == {"loaded": RULESET}
    if test_mode:
        assert ret["result"] is None and "would be loaded" in ret["comment"] and firewall.loads == []
    else:
        assert ret["result"] is True and firewall.loads == [RULESET]


def test_a_refused_load_fails_with_nfts_message(firewall, test_mode):
    firewall.refuse = "nft refuses /etc/rolestack/firewall.nft: Error: syntax error"
    ret = states.firewall_loaded(RULESET)
    if test_mode:
        assert ret["result"] is None
    else:
        assert ret["result"] is False and "syntax error" in ret["comment"] and ret["changes"] == {}


def test_a_load_that_leaves_the_table_different_fails(firewall, test_mode):
    firewall_salt = firewall.salt()
    firewall_salt["rolestack_kv.firewall_load"] = lambda path: firewall.loads.append(path) or True
    states.__salt__.update(firewall_salt)
    ret = states.firewall_loaded(RULESET)
    if not test_mode:
        assert ret["result"] is False and "still differs" in ret["comment"]
