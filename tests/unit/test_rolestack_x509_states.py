"""
The states of ``_states/rolestack_x509.py`` through salt-factories' loader mock (``configure_loader_modules``):
``__salt__`` holds a stand-in of the check, ``__states__`` a stand-in of x509_v2's state (answering, failing as a CA
that does not respond, or raising as x509_v2 does when the master's publish times out), ``__opts__`` the test
mode. Every test runs with test=True and without. The real x509_v2 runs in tests/functional/test_rolestack_x509.py.
"""

import pytest

from _states import rolestack_x509 as states

CERT = "/etc/mysql/ssl/server.pem"


class FakeX509:
    def __init__(self):
        self.current = []  # the check's verdicts, in order; the last one repeats
        self.answers = []  # what x509_v2's state does on each call: a ret, or an exception to raise
        self.calls = []

    def check(self, name, **kwargs):
        verdict = self.current.pop(0) if len(self.current) > 1 else self.current[0]
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    def state(self, name, **kwargs):
        self.calls.append(kwargs)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return dict(answer, name=name)


CHANGED = {"result": True, "changes": {"created": CERT}, "comment": "The certificate has been created"}
UNANSWERED = {
    "result": False,
    "changes": {},
    "comment": "ca_server did not respond. Salt master must permit peers to call the sign_remote_certificate function.",
}
TIMED_OUT = TypeError("string indices must be integers, not 'str'")


@pytest.fixture(params=[False, True], ids=["apply", "test"], autouse=True)
def test_mode(request):
    return request.param


@pytest.fixture
def x509():
    return FakeX509()


@pytest.fixture
def configure_loader_modules(x509, test_mode, monkeypatch):
    monkeypatch.setattr(states, "CA_PAUSE_S", 0)
    return {
        states: {
            "__salt__": {
                f"rolestack_x509.{check}": x509.check
                for check in ("pem_current", "private_key_current", "certificate_current")
            },
            "__states__": {
                f"x509.{fun}": x509.state for fun in ("pem_managed", "private_key_managed", "certificate_managed")
            },
            "__opts__": {"test": test_mode},
        }
    }


def certificate(ca_server="salt"):
    args = {"private_key": "/etc/mysql/ssl/server.key", "CN": "db2.production.wpdn"}
    if ca_server:
        args["ca_server"] = ca_server
    return states.certificate_managed(CERT, 30, signing_policy="p", signing_policy_contents={"CN": "x"}, **args)


def test_nothing_to_do_never_runs_x509(x509):
    x509.current = [True]
    ret = certificate()
    assert ret["result"] is True and ret["changes"] == {} and x509.calls == []


def test_something_to_do_runs_x509_with_the_policy_name_not_its_contents(x509, test_mode):
    x509.current, x509.answers = [False, True], [CHANGED]
    ret = certificate()
    assert ret["result"] is True and ret["changes"] == CHANGED["changes"]
    (call,) = x509.calls
    assert call["signing_policy"] == "p" and "signing_policy_contents" not in call and call["days_remaining"] == 30
    assert "still finds" not in ret["comment"]


def test_a_change_the_check_does_not_confirm_is_said(x509, test_mode):
    x509.current, x509.answers = [False], [CHANGED]
    ret = certificate()
    assert ret["result"] is True
    # in test mode nothing changed, so there is nothing to check again
    assert ("still finds a difference" in ret["comment"]) is not test_mode


def test_a_check_that_fails_unforeseen_leaves_the_decision_to_x509(x509):
    x509.current, x509.answers = [RuntimeError("unforeseen"), True], [CHANGED]
    ret = certificate()
    assert ret["result"] is True and len(x509.calls) == 1


@pytest.mark.parametrize("failure", [UNANSWERED, TIMED_OUT], ids=["did not respond", "publish timed out"])
def test_a_ca_that_did_not_answer_is_asked_again(x509, failure):
    x509.current, x509.answers = [False, True], [failure, CHANGED]
    ret = certificate()
    assert ret["result"] is True and len(x509.calls) == 2


@pytest.mark.parametrize("failure", [UNANSWERED, TIMED_OUT], ids=["did not respond", "publish timed out"])
def test_a_ca_that_never_answers_fails_in_one_line(x509, failure):
    x509.current, x509.answers = [False], [failure]
    ret = certificate()
    assert ret["result"] is False and ret["changes"] == {} and len(x509.calls) == states.CA_ATTEMPTS
    assert "\n" not in ret["comment"] and "Traceback" not in ret["comment"]
    assert f"the CA salt asked {states.CA_ATTEMPTS} times" in ret["comment"]


def test_without_a_ca_server_x509_is_asked_once(x509):
    x509.current, x509.answers = [False], [TIMED_OUT]
    ret = certificate(ca_server=None)
    assert ret["result"] is False and len(x509.calls) == 1 and "TypeError" in ret["comment"]


def test_another_failure_is_not_asked_again(x509):
    x509.current, x509.answers = [False], [{"result": False, "changes": {}, "comment": "ca_server reported errors"}]
    ret = certificate()
    assert ret["result"] is False and ret["comment"] == "ca_server reported errors" and len(x509.calls) == 1


@pytest.mark.parametrize("fun, args", [("pem_managed", {"text": "PEM"}), ("private_key_managed", {"keysize": 2048})])
def test_the_key_and_pem_states_run_x509_only_with_something_to_do(x509, fun, args):
    x509.current, x509.answers = [True], [CHANGED]
    assert getattr(states, fun)("/f", **args)["changes"] == {} and x509.calls == []
    x509.current = [False, True]
    assert getattr(states, fun)("/f", **args)["changes"] and x509.calls == [args]
