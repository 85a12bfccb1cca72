"""
ElasticSearch snapshots' pure logic (_utils/rolestack_elastic.py): the inventory's elastic key (validation, the
derived rolestack:elastic:snapshots), snapshot names, the retention plan, the repository's changes, error
messages. The client's requests run against the stand-in in tests/functional/test_elastic_snapshots.py.
"""

import copy
import datetime

import pytest
import rolestack_elastic as es
import rolestack_inventory as inv
import yaml

from tests.support.paths import PILLAR_EXAMPLE

UTC = datetime.UTC


@pytest.fixture
def example():
    return yaml.safe_load((PILLAR_EXAMPLE / "inventory.yaml").read_text())


def _with(example, elastic):
    data = copy.deepcopy(example)
    data["elastic"] = elastic
    return data


def test_the_example_is_valid_and_the_key_optional(example):
    assert inv.validate(example) == []
    data = copy.deepcopy(example)
    data.pop("elastic", None)
    assert inv.validate(data) == []
    snapshots = inv.derive(data)["hosts"]["elastic1"]["elastic"]["snapshots"]
    assert snapshots["repository"] == es.DEFAULT_REPOSITORY and snapshots["retention"] == es.DEFAULT_RETENTION
    assert snapshots["url"] == es.DEFAULT_URL and snapshots["compress"] is True
    assert snapshots["location"] == f"{es.MOUNT_PATH}/main" and snapshots["scheduler"] is True
    assert "OnCalendar=*-*-* 01:30:00 UTC" in snapshots["timer"]
    assert "rolestack_elastic.scheduled" in snapshots["service"]


REFUSALS = [
    ("not-a-mapping", "elastic: got a str of length 13, expected a mapping with keys snapshot_repository"),
    ({"other": 1}, "elastic.other: unknown key (value: an int), expected one of snapshot_repository"),
    ({"snapshot_repository": "Backup"}, "elastic.snapshot_repository: got 'Backup' (a str of length 6), expected"),
    ({"snapshot_repository": "_x"}, "elastic.snapshot_repository: got '_x'"),
    ({"snapshot_repository": 5}, "elastic.snapshot_repository: got 5 (an int), expected a repository name"),
    ({"snapshot_retention": 0}, "elastic.snapshot_retention: got 0 (an int), expected an integer from 1 to 1000"),
    ({"snapshot_retention": True}, "elastic.snapshot_retention: got True (a bool), expected an integer"),
    ({"snapshot_retention": "7"}, "elastic.snapshot_retention: got '7' (a str of length 1), expected an integer"),
    ({"snapshot_time": "1:30"}, "elastic.snapshot_time: got '1:30' (a str of length 4), expected a quoted time"),
    ({"snapshot_time": 90}, "elastic.snapshot_time: got 90 (an int), expected a quoted time of day HH:MM in UTC"),
    ({"snapshot_time": "24:00"}, "elastic.snapshot_time: got '24:00'"),
    ({"url": "ftp://x:9200"}, "elastic.url: got 'ftp://x:9200' (a str of length 12), expected an http:// or https://"),
    ({"url": 9200}, "elastic.url: got an int, expected a URL such as 'http://127.0.0.1:9200'"),
    ({"url": "http://x:9200/_snapshot"}, "elastic.url: got 'http://x:9200/_snapshot', expected scheme, host and port"),
    ({"url": "http://x:99999"}, "elastic.url: got 'http://x:99999'"),
    ({"url": "http://bad_host!:9200"}, "elastic.url: got host 'bad_host!', expected a host name or an IP address"),
    ({"ca_file": "certs/ca.crt"}, "elastic.ca_file: got 'certs/ca.crt' (a str of length 12), expected an absolute"),
    ({"ca_file": "/etc/../ca.crt"}, "elastic.ca_file: got '/etc/../ca.crt'"),
]


@pytest.mark.parametrize(("elastic", "expected"), REFUSALS)
def test_an_invalid_elastic_key_is_refused_naming_the_path(example, elastic, expected):
    errors = inv.validate(_with(example, elastic))
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_a_url_with_credentials_is_refused_without_echoing_them(example):
    errors = inv.validate(_with(example, {"url": "https://admin:s3cret-pass@es.example:9200"}))
    assert errors == [
        "elastic.url: got a URL with credentials (a str of length 41), expected one without user or password"
    ]
    assert "s3cret" not in errors[0] and "admin" not in errors[0]
    with pytest.raises(es.ElasticError) as caught:
        es.Client("http://admin:s3cret-pass@127.0.0.1:9200")
    assert "s3cret" not in str(caught.value)


PASSWORD = "example-elastic-snapshots-0123456789"


def test_a_user_and_its_password_go_together(example):
    data = _with(example, {"username": "snapshots"})
    assert inv.validate(data) == [
        "secrets.elastic_snapshot_password: missing, expected the password of elastic.username (at least 16 characters)"
    ]
    data["secrets"]["elastic_snapshot_password"] = "short"
    assert inv.validate(data) == [
        "secrets.elastic_snapshot_password: got a str of length 5, expected a string of at least 16 characters"
    ]
    data["secrets"]["elastic_snapshot_password"] = PASSWORD
    assert inv.validate(data) == []
    data["elastic"]["username"] = "snap shots"
    assert inv.validate(data) == [
        "elastic.username: got 'snap shots' (a str of length 10), expected a user name of letters, digits and _.@- "
        "(at most 64) such as 'snapshots'"
    ]
    data["elastic"]["username"] = "snapshots"
    hosts = inv.derive(data)["hosts"]
    assert hosts["elastic1"]["elastic"]["snapshots"]["username"] == "snapshots"
    assert hosts["elastic1"]["secrets"]["elastic_snapshot_password"] == PASSWORD
    assert [name for name, pillar in hosts.items() if "elastic_snapshot_password" in pillar.get("secrets", {})] == [
        "elastic1"
    ]
    del data["elastic"]
    assert inv.validate(data) == [
        "elastic.username: missing, expected the user whose password secrets.elastic_snapshot_password is"
    ]


def test_every_problem_is_reported_at_once(example):
    errors = inv.validate(_with(example, {"snapshot_retention": -1, "snapshot_time": "x", "url": "nope"}))
    assert [error.split(":")[0] for error in errors] == [
        "elastic.snapshot_retention",
        "elastic.snapshot_time",
        "elastic.url",
    ]


def test_valid_settings_reach_every_member_and_one_member_schedules(example):
    data = _with(
        example,
        {
            "snapshot_repository": "nightly",
            "snapshot_retention": 3,
            "snapshot_time": "23:05",
            "url": "https://es1:9201/",
        },
    )
    data["hosts"]["elastic2"] = {"address": "10.10.10.42", "cluster": "main"}
    data["hosts"]["elastic3"] = {"address": "10.10.10.43", "cluster": "logs"}
    data["hosts"]["elastic4"] = {"roles": ["elastic"], "cluster": "main"}  # pending: no address yet
    assert inv.validate(data) == []
    hosts = inv.derive(data)["hosts"]
    snap = {name: hosts[name]["elastic"]["snapshots"] for name in ("elastic1", "elastic2", "elastic3", "elastic4")}
    assert {s["repository"] for s in snap.values()} == {"nightly"} and {s["retention"] for s in snap.values()} == {3}
    assert snap["elastic1"]["url"] == "https://es1:9201"
    assert [name for name, s in snap.items() if s["scheduler"]] == ["elastic1", "elastic3"]
    assert snap["elastic1"]["location"] == snap["elastic2"]["location"] == "/mnt/elastic-snapshots/main"
    assert snap["elastic3"]["location"] == "/mnt/elastic-snapshots/logs"  # never two clusters in one repository
    assert "OnCalendar=*-*-* 23:05:00 UTC" in snap["elastic1"]["timer"]
    assert not [
        name for name, pillar in hosts.items() if "elastic" not in pillar["host"]["roles"] and "elastic" in pillar
    ]


def test_names_are_dated_in_utc():
    paris = datetime.timezone(datetime.timedelta(hours=1))
    now = datetime.datetime(2026, 12, 2, 2, 30, 0, tzinfo=paris)
    assert es.snapshot_name(now, []) == "rolestack-2026.12.02-013000"
    assert es.is_ours("rolestack-2026.12.02-013000")
    with pytest.raises(ValueError, match="expected an aware datetime"):
        es.snapshot_name(datetime.datetime(2026, 12, 2), [])


def test_names_never_repeat_within_one_second():
    now = datetime.datetime(2026, 12, 2, 1, 30, tzinfo=UTC)
    taken = set()
    for _ in range(25):
        name = es.snapshot_name(now, taken)
        assert name not in taken and es.is_ours(name)
        taken.add(name)
    assert sorted(taken)[:3] == [
        "rolestack-2026.12.02-013000",
        "rolestack-2026.12.02-013000-1",
        "rolestack-2026.12.02-013000-10",
    ]
    assert es.snapshot_name(now, {"rolestack-2026.12.02-013000", "rolestack-2026.12.02-013000-2"}).endswith("-1")


def _snap(name, state="SUCCESS", start=None):
    return {"snapshot": name, "state": state, "start_time_in_millis": start}


def _daily(day, state="SUCCESS"):
    start = int(datetime.datetime(2026, 11, day, 1, 30, tzinfo=UTC).timestamp() * 1000)
    return _snap(f"rolestack-2026.11.{day:02d}-013000", state, start)


def test_retention_keeps_the_newest_good_snapshots():
    snapshots = [_daily(day) for day in range(1, 11)]
    plan = es.retention_plan(snapshots, 3)
    assert plan["keep"] == [f"rolestack-2026.11.{day:02d}-013000" for day in (10, 9, 8)]
    assert plan["delete"] == [f"rolestack-2026.11.{day:02d}-013000" for day in range(7, 0, -1)]
    assert es.retention_plan(snapshots, 10)["delete"] == []


def test_retention_never_deletes_one_in_progress_nor_anothers():
    snapshots = [_daily(1, "IN_PROGRESS"), _daily(2), _daily(3), _daily(4), _snap("manual-before-upgrade", start=1)]
    plan = es.retention_plan(snapshots, 1)
    assert plan["keep"] == ["rolestack-2026.11.04-013000"]
    assert plan["in_progress"] == ["rolestack-2026.11.01-013000"]
    assert plan["delete"] == ["rolestack-2026.11.03-013000", "rolestack-2026.11.02-013000"]
    assert plan["others"] == ["manual-before-upgrade"]


def test_failed_snapshots_never_count_as_kept_ones():
    snapshots = [_daily(1), _daily(2), _daily(3, "FAILED"), _daily(4, "PARTIAL"), _daily(5, "FAILED")]
    plan = es.retention_plan(snapshots, 2)
    assert plan["keep"] == ["rolestack-2026.11.02-013000", "rolestack-2026.11.01-013000"]
    assert plan["delete"] == [] and len(plan["newer_not_good"]) == 3  # nothing good is rotated away
    plan = es.retention_plan([*snapshots, _daily(6)], 2)
    assert plan["keep"] == ["rolestack-2026.11.06-013000", "rolestack-2026.11.02-013000"]
    assert plan["delete"] == ["rolestack-2026.11.01-013000"]
    assert plan["newer_not_good"] == [f"rolestack-2026.11.0{day}-013000" for day in (5, 4, 3)]
    only_failed = es.retention_plan([_daily(1, "FAILED")], 1)
    assert only_failed["keep"] == [] and only_failed["delete"] == []


def test_same_second_snapshots_are_ordered_by_their_suffix():
    snapshots = [_snap("rolestack-2026.11.01-013000-2", start=5), _snap("rolestack-2026.11.01-013000", start=5)]
    snapshots.append(_snap("rolestack-2026.11.01-013000-1", start=5))
    assert es.retention_plan(snapshots, 1)["keep"] == ["rolestack-2026.11.01-013000-2"]


@pytest.mark.parametrize("keep", [0, -1, True, "3", None])
def test_retention_needs_a_positive_integer(keep):
    with pytest.raises(ValueError, match=r"keep: got .*expected an integer of at least 1"):
        es.retention_plan([], keep)


def test_repository_changes_compare_with_what_elastic_keeps():
    wanted = es.repository_body("/mnt/elastic-snapshots/main")
    assert es.repository_changes(None, wanted) == {"repository": {"old": None, "new": wanted}}
    live = {
        "type": "fs",
        "settings": {"location": "/mnt/elastic-snapshots/main", "compress": "true", "chunk_size": "1g"},
    }
    assert es.repository_changes(live, wanted) == {}
    moved = dict(live, settings=dict(live["settings"], location="/old", compress="false"))
    assert es.repository_changes(moved, wanted) == {
        "settings.location": {"old": "/old", "new": "/mnt/elastic-snapshots/main"},
        "settings.compress": {"old": "false", "new": True},
    }
    assert es.repository_changes({"type": "url", "settings": live["settings"]}, wanted) == {
        "type": {"old": "url", "new": "fs"}
    }


def test_error_messages_are_one_line_with_status_type_and_reason():
    body = {
        "error": {
            "root_cause": [{"type": "repository_missing_exception", "reason": "[b] missing"}],
            "type": "repository_missing_exception",
            "reason": "[b] missing",
        },
        "status": 404,
    }
    message, error_type = es.error_message("GET", "/_snapshot/b", 404, body)
    assert message == "ElasticSearch GET /_snapshot/b: HTTP 404 repository_missing_exception: [b] missing"
    assert error_type == "repository_missing_exception"
    nested = {
        "error": {
            "type": "repository_verification_exception",
            "reason": "[b] path is not accessible\non node",
            "root_cause": [{"type": "access_denied_exception", "reason": "/mnt/x"}],
        }
    }
    message, _ = es.error_message("PUT", "/_snapshot/b", 500, nested)
    assert "\n" not in message and message.endswith("(root cause access_denied_exception: /mnt/x)")
    message, error_type = es.error_message(
        "GET", "/x", 400, {"error": "no handler found for uri [/x] and method [GET]"}
    )
    assert (
        message == "ElasticSearch GET /x: HTTP 400 no handler found for uri [/x] and method [GET]"
        and error_type is None
    )
    message, _ = es.error_message("GET", "/x", 502, "<html>\nBad gateway</html>")
    assert message == "ElasticSearch GET /x: HTTP 502 Bad Gateway: <html> Bad gateway</html>"


def test_names_are_checked_before_any_request():
    client = es.Client("http://127.0.0.1:1")
    with pytest.raises(es.ElasticError, match=r"repository: got '\.\./_all', expected lowercase"):
        client.get_repository("../_all")
    with pytest.raises(es.ElasticError, match="snapshot: got 'Snap', expected lowercase"):
        client.delete_snapshot("backup", "Snap")


def test_a_node_that_does_not_answer_is_one_line():
    with pytest.raises(es.ElasticError) as caught:
        es.Client("http://127.0.0.1:1", timeout=2).list_snapshots("backup")
    assert str(caught.value).startswith("ElasticSearch at http://127.0.0.1:1: GET /_snapshot/backup/_all: ")
    assert "\n" not in str(caught.value) and caught.value.status is None
