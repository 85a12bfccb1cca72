"""
ElasticSearch's snapshots through salt-factories loaders, against the HTTP stand-in of the ``_snapshot`` API
(tests/support/elastic_standin.py: ElasticSearch cannot be installed here; docs/roles/elastic.md says what this
does and does not verify). The repository state registers idempotently (a second run changes nothing and PUTs
nothing, test=True reports without a PUT), the snapshot files land in the repository's directory, snapshot names
never repeat, the prune keeps the newest N good snapshots and never one in progress, and every failure is one line
without a traceback.
"""

import datetime
import shutil
import socket
import subprocess

import pytest
import rolestack_elastic as es
import yaml
from salt.exceptions import CommandExecutionError

from tests.support.elastic_standin import ElasticStandin

REPO = "rolestack_backup"


@pytest.fixture
def standin(tmp_path):
    root = tmp_path / "snapshots"
    root.mkdir()
    server = ElasticStandin([root]).start()
    server.root = root
    yield server
    server.stop()


@pytest.fixture
def elastic_loaders(make_loaders, tmp_path, standin):
    """loaders(**snapshots) -> the loaders of minion elastic1 whose rolestack:elastic:snapshots is that."""

    def loaders(secrets=None, **overrides):
        tree = tmp_path / f"pillar-{len(list(tmp_path.glob('pillar-*')))}"
        tree.mkdir()
        (tree / "top.sls").write_text("base:\n  '*':\n    - rolestack\n")
        snapshots = {
            "repository": REPO,
            "location": str(standin.root / "main"),
            "compress": True,
            "retention": 3,
            "url": standin.url,
            "scheduler": True,
            **overrides,
        }
        pillar = {
            "rolestack": {
                "platform": {"zone": "production.wpdn"},
                "host": {"name": "elastic1", "roles": ["elastic"]},
                "elastic": {"cluster": "main", "snapshots": snapshots},
                "secrets": secrets or {},
            }
        }
        (tree / "rolestack.sls").write_text(yaml.safe_dump(pillar))
        return make_loaders("elastic1", ext_pillar=[], pillar_roots={"base": [str(tree)]})

    return loaders


def _one_line(text):
    assert "\n" not in text and "Traceback" not in text, text
    return text


def _refusal(call, **kwargs):
    """The message of the CommandExecutionError ``call`` raises: one line, no traceback."""
    with pytest.raises(CommandExecutionError) as caught:
        call(**kwargs)
    return _one_line(str(caught.value))


def test_the_sls_renders_from_the_derived_pillar(make_loaders, pillar_tree, standin):
    inventory = pillar_tree / "inventory.yaml"
    data = yaml.safe_load(inventory.read_text())
    data["elastic"] = {"url": standin.url, "snapshot_retention": 5}
    inventory.write_text(yaml.safe_dump(data))
    loaders = make_loaders("elastic1")
    high = loaders.modules.state.show_sls("elastic.snapshots")
    assert isinstance(high, dict), high
    repository = high["elastic-snapshot-repository"]["rolestack_elastic"]
    assert {"name": REPO} in repository and {"location": "/mnt/elastic-snapshots/main"} in repository
    assert {"url": standin.url} in repository
    timer = next(a["contents"] for a in high["elastic-snapshot-timer-unit"]["file"] if "contents" in a)
    assert "OnCalendar=*-*-* 01:30:00 UTC" in timer
    assert "running" in high["elastic-snapshot-timer"]["rolestack_service"]
    # the repository state with the derived pillar, test=True: a GET, no PUT, nothing written on this machine
    state = loaders.modules.state.sls_id("elastic-snapshot-repository", "elastic.snapshots", test=True)
    assert state.result is None and "would be registered" in state.comment, state.raw
    assert standin.requests == [("GET", f"/_snapshot/{REPO}", {})] and standin.writes() == []
    # applied: the stand-in's path.repo does not hold /mnt/elastic-snapshots: refused as a node would, in one line
    state = loaders.modules.state.sls_id("elastic-snapshot-repository", "elastic.snapshots")
    assert state.result is False, state.raw
    assert _one_line(state.comment).startswith(
        f"rolestack_elastic.register_repository: ElasticSearch PUT /_snapshot/{REPO}: HTTP 500 repository_exception: "
        f"[{REPO}] location [/mnt/elastic-snapshots/main] doesn't match any of the locations specified by path.repo"
    )


def test_only_one_member_of_a_cluster_runs_the_timer(make_loaders, pillar_tree):
    inventory = pillar_tree / "inventory.yaml"
    data = yaml.safe_load(inventory.read_text())
    data["hosts"]["elastic2"] = {"address": "10.10.10.42", "cluster": "main"}
    inventory.write_text(yaml.safe_dump(data))
    high = make_loaders("elastic2").modules.state.show_sls("elastic.snapshots")
    assert isinstance(high, dict), high
    assert "dead" in high["elastic-snapshot-timer"]["rolestack_service"]
    absent = high["elastic-snapshot-units-absent"]["file"]
    assert {"names": [f"/etc/systemd/system/{es.TIMER_UNIT}", f"/etc/systemd/system/{es.SERVICE_UNIT}"]} in absent
    assert "elastic-snapshot-timer-unit" not in high and "elastic-snapshot-repository" in high


def test_the_sls_refuses_another_host(make_loaders):
    ret = make_loaders("app1").modules.state.sls("elastic.snapshots", test=True)
    assert ret.failed and "elastic.snapshots applies only to hosts with role elastic" in str(ret.raw)


def test_the_repository_registers_idempotently(elastic_loaders, standin):
    loaders = elastic_loaders()
    location = standin.root / "main"
    would = loaders.states.rolestack_elastic.repository_registered(name=REPO, location=str(location), test=True)
    assert would.result is None and "repository" in would.changes, would
    assert standin.writes() == [] and not location.exists()
    done = loaders.states.rolestack_elastic.repository_registered(name=REPO, location=str(location))
    assert done.result is True and done.comment == f"snapshot repository {REPO} registered", done
    assert standin.writes() == [("PUT", f"/_snapshot/{REPO}", {})]
    assert (location / "index.latest").is_file(), "the repository's files land in its location"
    again = loaders.states.rolestack_elastic.repository_registered(name=REPO, location=str(location))
    assert again.result is True and again.changes == {}, again
    quiet = loaders.states.rolestack_elastic.repository_registered(name=REPO, location=str(location), test=True)
    assert quiet.result is True and quiet.changes == {}, quiet
    assert len(standin.writes()) == 1, "no second PUT"
    registered = loaders.modules.rolestack_elastic.repository()
    assert registered == {
        "name": REPO,
        "registered": True,
        "type": "fs",
        "settings": {"location": str(location), "compress": "true"},
    }


def test_a_repository_changed_by_hand_is_put_back(elastic_loaders, standin):
    loaders = elastic_loaders()
    assert loaders.modules.rolestack_elastic.register_repository()["acknowledged"] is True
    other = standin.root / "elsewhere"
    loaders.modules.rolestack_elastic.register_repository(location=str(other), compress=False)
    ret = loaders.states.rolestack_elastic.repository_registered(name=REPO)  # location: the pillar's
    assert ret.result is True and set(ret.changes) == {"settings.location", "settings.compress"}, ret
    assert ret.changes["settings.location"] == {"old": str(other), "new": str(standin.root / "main")}
    assert standin.repositories[REPO]["settings"] == {"location": str(standin.root / "main"), "compress": "true"}


def test_snapshot_names_never_repeat_and_their_files_land_in_the_repository(elastic_loaders, standin):
    module = elastic_loaders().modules.rolestack_elastic
    module.register_repository()
    # every name of the next 30 seconds is taken already: each new one gets a suffix
    now = datetime.datetime.now(datetime.UTC)
    for second in range(30):
        standin.add_snapshot(REPO, es.snapshot_name(now + datetime.timedelta(seconds=second), []))
    names = [module.snapshot()["name"] for _ in range(3)]
    assert len(set(names)) == 3 and all(es.is_ours(name) for name in names), names
    assert all(name.count("-") == 3 for name in names), "each with a suffix: its plain name was taken"
    assert [r[2] for r in standin.writes() if r[0] == "PUT" and r[1].count("/") == 3] == [
        {"wait_for_completion": "true"}
    ] * 3
    listed = module.snapshots()
    assert [s["name"] for s in listed][-3:] == names and {s["state"] for s in listed} == {"SUCCESS"}
    location = standin.root / "main"
    assert len(list(location.glob("snap-*.dat"))) == 33 and len(list(location.glob("meta-*.dat"))) == 33


def test_a_name_taken_meanwhile_is_replaced_by_the_next(elastic_loaders, standin):
    module = elastic_loaders().modules.rolestack_elastic
    module.register_repository()
    now = datetime.datetime.now(datetime.UTC)
    # another client is starting these: refused by a PUT, not yet listed by GET _all
    standin.hidden = {es.snapshot_name(now + datetime.timedelta(seconds=s), []) for s in range(3)}
    standin.hidden |= {f"{name}-1" for name in standin.hidden}
    taken = module.snapshot(wait=False)
    assert taken["name"] not in standin.hidden and taken["accepted"] is True and taken["state"] is None
    refused = [r for r in standin.writes() if r[0] == "PUT" and r[1].count("/") == 3][:-1]
    assert refused, "the first name tried was refused as taken"


def _daily(standin, days, state="SUCCESS"):
    names = []
    for day in days:
        moment = datetime.datetime(2026, 11, day, 1, 30, tzinfo=datetime.UTC)
        name = es.snapshot_name(moment, [])
        standin.add_snapshot(REPO, name, state=state, start_ms=int(moment.timestamp() * 1000))
        names.append(name)
    return names


def test_prune_keeps_the_newest_n_and_never_one_in_progress(elastic_loaders, standin):
    module = elastic_loaders().modules.rolestack_elastic
    module.register_repository()
    running = _daily(standin, [1], state="IN_PROGRESS")
    good = _daily(standin, range(2, 9))
    standin.add_snapshot(REPO, "manual-before-upgrade", start_ms=0)
    would = module.prune(test=True)  # keep: the pillar's retention, 3
    assert would["keep"] == good[::-1][:3] and would["delete"] == good[::-1][3:] and would["deleted"] == []
    assert [r for r in standin.writes() if r[0] == "DELETE"] == []
    done = module.prune()
    assert done["deleted"] == good[::-1][3:] and done["in_progress"] == running
    assert done["others"] == ["manual-before-upgrade"]
    assert sorted(standin.snapshots[REPO]) == sorted([*good[-3:], *running, "manual-before-upgrade"])
    deletes = [r[1].rsplit("/", 1)[1] for r in standin.writes() if r[0] == "DELETE"]
    assert deletes == good[::-1][3:] and running[0] not in deletes
    assert len(list((standin.root / "main").glob("snap-*.dat"))) == 5, "the deleted snapshots' files are gone"
    assert module.prune(keep=1)["deleted"] == [good[-2], good[-3]]


def test_the_scheduled_run_takes_a_snapshot_then_prunes(elastic_loaders, standin):
    module = elastic_loaders(retention=2).modules.rolestack_elastic
    module.register_repository()
    old = _daily(standin, range(1, 4))
    ran = module.scheduled()
    assert ran["snapshot"]["state"] == "SUCCESS" and es.is_ours(ran["snapshot"]["name"])
    assert ran["prune"]["keep"] == [ran["snapshot"]["name"], old[-1]] and ran["prune"]["deleted"] == old[:2][::-1]


def test_failures_are_one_line_without_a_traceback(elastic_loaders, standin):
    module = elastic_loaders().modules.rolestack_elastic
    assert _refusal(module.snapshot) == (
        f"rolestack_elastic.snapshot: ElasticSearch GET /_snapshot/{REPO}/_all: HTTP 404 repository_missing_exception: "
        f"[{REPO}] missing"
    )
    module.register_repository()
    outside = _refusal(module.register_repository, name="other", location="/var/tmp/not-in-path-repo")
    assert "HTTP 500 repository_exception: [other] location [/var/tmp/not-in-path-repo] doesn't match" in outside
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = elastic_loaders(url=f"http://127.0.0.1:{port}").modules.rolestack_elastic
    assert _refusal(down.snapshots) == (
        f"rolestack_elastic.snapshots: ElasticSearch at http://127.0.0.1:{port}: GET /_snapshot/{REPO}/_all: "
        "Connection refused"
    )
    ret = elastic_loaders(url=f"http://127.0.0.1:{port}").states.rolestack_elastic.repository_registered(name=REPO)
    assert ret.result is False and _one_line(ret.comment).endswith("Connection refused"), ret


def test_a_secured_node_gets_the_users_password_and_never_shows_it(elastic_loaders, standin):
    password = "elastic-snapshots-0123456789"
    standin.users = {"snapshots": password}
    anonymous = elastic_loaders().modules.rolestack_elastic
    assert _refusal(anonymous.repository) == (
        f"rolestack_elastic.repository: ElasticSearch GET /_snapshot/{REPO}: HTTP 401 security_exception: "
        f"missing authentication credentials for REST request [/_snapshot/{REPO}]"
    )
    wrong = elastic_loaders(username="snapshots", secrets={"elastic_snapshot_password": "wrong-password-0123456789"})
    refused = _refusal(wrong.modules.rolestack_elastic.register_repository)
    assert "HTTP 401 security_exception: unable to authenticate user [snapshots]" in refused
    assert "wrong-password" not in refused
    unset = elastic_loaders(username="snapshots")
    with pytest.raises(CommandExecutionError, match=r"no secrets\.elastic_snapshot_password in this host's pillar"):
        unset.modules.rolestack_elastic.snapshots()
    right = elastic_loaders(username="snapshots", secrets={"elastic_snapshot_password": password})
    done = right.states.rolestack_elastic.repository_registered(name=REPO)
    assert done.result is True and password not in str(done.raw), done
    taken = right.modules.rolestack_elastic.snapshot()
    assert taken["state"] == "SUCCESS"
    assert standin.writes() == [
        ("PUT", f"/_snapshot/{REPO}", {}),  # the wrong password's PUT was refused before it changed anything
        ("PUT", f"/_snapshot/{REPO}", {}),
        ("PUT", f"/_snapshot/{REPO}/{taken['name']}", {"wait_for_completion": "true"}),
    ]
    assert list(standin.repositories) == [REPO]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_the_timers_calendar_is_one_systemd_accepts():
    done = subprocess.run(
        ["systemd-analyze", "calendar", es.on_calendar("01:30")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "Normalized form: *-*-* 01:30:00 UTC" in done.stdout, done.stdout + done.stderr
    wrong = subprocess.run(["systemd-analyze", "calendar", "*-*-* 25:30:00 UTC"], capture_output=True, check=False)
    assert wrong.returncode != 0, "the check can fail"
