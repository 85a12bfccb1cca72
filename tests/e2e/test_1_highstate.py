"""The idempotency gate, for every host of the lab: first highstate without failures, second with zero changes."""

import json

import pytest

from tests.e2e.conftest import LAB_NAME
from tests.e2e.conftest import changed_states
from tests.e2e.conftest import rolestack_lab

SMALL = rolestack_lab.PROFILES["small"]


@pytest.fixture(scope="module")
def first(lab):
    return json.loads((lab.lab.dir / "first-highstate.json").read_text())


@pytest.fixture(scope="module")
def second(lab, first):
    return lab.highstate()


def test_the_lab_runs_the_small_profile(lab):
    assert lab.hosts == sorted(SMALL)
    assert f"lab {LAB_NAME} (small) up in" in lab.up_output


@pytest.mark.parametrize("host", sorted(SMALL))
def test_first_highstate_has_no_failed_state(first, host):
    row = next(row for row in first["rows"] if row["host"] == host)
    assert "error" not in row, row
    assert row["failed"] == 0, first["returns"][host]
    assert row["states"] >= 7  # at least the base role
    assert row["changed"] > 0  # a fresh host really was converged


@pytest.mark.parametrize("host", sorted(SMALL))
def test_second_highstate_reports_zero_changes(second, host):
    row = next(row for row in second["rows"] if row["host"] == host)
    assert "error" not in row, row
    changed = changed_states(second)[host]
    assert row["failed"] == 0 and not changed, changed
