"""The one highstate summary and the one wait (``_utils/rolestack_highstate.py``) of the runner, the lab and the tests."""

import pytest
import rolestack_highstate as hs

STATES = {
    "file_|-base-motd_|-/etc/motd_|-managed": {
        "__id__": "base-motd",
        "result": True,
        "changes": {"diff": "New file"},
        "comment": "File /etc/motd updated",
        "duration": 12.5,
    },
    "file_|-base-issue_|-/etc/issue.net_|-managed": {
        "__id__": "base-issue",
        "result": True,
        "changes": {},
        "comment": "File /etc/issue.net is in the correct state",
        "duration": "7.5",
    },
    "cmd_|-db-reload_|-flush_|-run": {
        "__id__": "db-reload",
        "result": False,
        "changes": {"retcode": 1},
        "comment": "Command failed",
        "duration": 1000,
    },
    "x509_|-db-cert_|-/etc/mysql/ssl/server.pem_|-certificate_managed": {
        "__id__": "db-cert",
        "result": None,
        "changes": {"created": "/etc/mysql/ssl/server.pem"},
        "comment": "The certificate would be created",
    },
}


def test_every_state_is_ok_changed_or_failed():
    summary = hs.summarize(STATES)
    assert summary == {
        "states": 4,
        "ok": 1,
        "changed": [("base-motd", {"diff": "New file"})],
        # a real run that leaves a state at None did not do it
        "failed": [("db-reload", "Command failed"), ("db-cert", "The certificate would be created")],
        "seconds": 1.02,
    }


def test_under_test_none_is_a_change_to_come():
    summary = hs.summarize(STATES, test=True)
    assert summary["changed"] == [
        ("base-motd", {"diff": "New file"}),
        ("db-cert", {"created": "/etc/mysql/ssl/server.pem"}),
    ]
    assert summary["failed"] == [("db-reload", "Command failed")]
    assert summary["ok"] == 1


def test_a_state_without_result_or_not_a_state_failed():
    summary = hs.summarize({"a_|-x_|-x_|-f": {"changes": {}, "comment": "no result"}, "b": "a bare string"})
    assert summary["failed"] == [("a_|-x_|-x_|-f", "no result"), ("b", "a bare string")]
    assert summary["ok"] == 0 and summary["states"] == 2
    assert hs.summarize({"a": {"result": None}}, test=True)["changed"] == [("a", {})]


@pytest.mark.parametrize(
    ("ret", "error"),
    [
        (None, hs.NO_ANSWER),
        (["Pillar failed to render:", "invalid inventory"], "Pillar failed to render:; invalid inventory"),
        ("Minion did not return. [Not connected]", "Minion did not return. [Not connected]"),
    ],
)
def test_a_return_without_states_is_an_error(ret, error):
    assert hs.summarize(ret) == {"error": error}


@pytest.mark.parametrize(
    ("ret", "error"),
    [
        (None, hs.NO_ANSWER),
        ("not a dict", hs.NO_ANSWER),
        ({"retcode": 0}, hs.NO_ANSWER),
        ({"ret": {}, "out": "no_return"}, hs.NO_ANSWER),
        ({"ret": ["Rendering SLS 'base:db.certs' failed"], "retcode": 5}, "Rendering SLS 'base:db.certs' failed"),
    ],
)
def test_full_return_unwrapped(ret, error):
    assert hs.summarize(ret, full_return=True) == {"error": error}
    assert hs.summarize({"ret": STATES, "retcode": 2}, full_return=True) == hs.summarize(STATES)


def test_summarize_all_in_the_given_order_a_missing_minion_did_not_answer():
    got = hs.summarize_all({"db1": {"ret": {}}, "extra": {"ret": {}}}, ["db2", "db1"], full_return=True)
    assert list(got) == ["db2", "db1"]
    assert got["db2"] == {"error": hs.NO_ANSWER}
    assert got["db1"] == {"states": 0, "ok": 0, "changed": [], "failed": [], "seconds": 0.0}


class Clock:
    """time.monotonic and time.sleep of the util, without waiting."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(hs.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(hs.time, "sleep", fake.sleep)
    return fake


def test_poll_returns_as_soon_as_true(clock):
    answers = iter([False, False, True])
    assert hs.poll(lambda: next(answers), 10, interval=2) is True
    assert clock.sleeps == [2, 2]


def test_poll_asks_once_more_at_the_deadline(clock):
    asked = []
    assert hs.poll(lambda: asked.append(clock.now) and False, 5, interval=2) is False
    assert asked == [100.0, 102.0, 104.0, 105.0]  # the last sleep is cut to the deadline
    assert clock.sleeps == [2, 2, 1]


def test_poll_with_no_time_asks_once(clock):
    asked = []
    assert hs.poll(lambda: asked.append(1), 0) is False
    assert asked == [1] and clock.sleeps == []


def test_wait_for_names_what_it_waited_for(clock):
    hs.wait_for(lambda: True, 1, "nothing")
    with pytest.raises(TimeoutError, match=r"^timed out after 3 s waiting for gdnsd on 127.0.0.1:5353$"):
        hs.wait_for(lambda: False, 3, "gdnsd on 127.0.0.1:5353")


def test_wait_for_raises_the_callers_error_naming_what_was_last_seen(clock):
    class LabError(Exception):
        pass

    seen = []

    def count():
        seen.append(len(seen))
        return False

    with pytest.raises(LabError, match=r"waiting for 3 rows \(last: 2\)$"):
        hs.wait_for(count, 1, lambda: f"3 rows (last: {seen[-1]})", interval=0.5, error=LabError)
