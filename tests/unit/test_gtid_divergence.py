"""
A db host holding transactions its source never had (a forked old primary): the shared GTID logic
(``_utils/rolestack_gtid.py``) and the execution module's ``gtid_missing``. The replica state's decisions over it
are in tests/unit/test_mariadb_replication_states.py, the real servers in tests/functional/test_replica_divergence.py.
"""

import pytest
import rolestack_gtid as gtid
from salt.exceptions import SaltInvocationError

from _modules import mariadb_replication as mod

S1, S2 = 168430091, 168430092


# ---- the shared logic ----------------------------------------------------------------------------


def test_parse_positions_and_binlog_states():
    assert gtid.parse("0-1-100,1-2-7") == [(0, 1, 100), (1, 2, 7)]
    assert gtid.parse(" ") == [] and gtid.parse(None) == []
    assert gtid.parse("0-1-10,0-2-12", binlog_state=True) == [(0, 1, 10), (0, 2, 12)]
    with pytest.raises(SaltInvocationError, match="domain 0 appears twice in GTID position"):
        gtid.parse("0-1-10,0-2-12")
    with pytest.raises(SaltInvocationError, match="domain 0 server 1 appears twice in GTID binlog state"):
        gtid.parse("0-1-10,0-1-12", binlog_state=True)


@pytest.mark.parametrize(
    ("position", "state", "missing"),
    [
        (f"0-{S1}-10", f"0-{S1}-10,0-{S2}-12", []),  # the old primary's last transaction reached the new one
        (f"0-{S2}-11", f"0-{S1}-10,0-{S2}-12", []),
        (f"0-{S1}-12", f"0-{S1}-10,0-{S2}-12", [f"0-{S1}-12"]),  # seq 12 exists there, from another server: a fork
        (f"0-{S1}-11", f"0-{S1}-10", [f"0-{S1}-11"]),  # written and never replicated
        (f"0-{S1}-10,1-{S1}-3", f"0-{S1}-10", [f"1-{S1}-3"]),  # a domain the source never saw
        ("", f"0-{S1}-10", []),
        (f"0-{S1}-1", "", [f"0-{S1}-1"]),
    ],
)
def test_missing_names_the_transactions_the_other_never_had(position, state, missing):
    assert gtid.missing(position, state) == missing
    assert mod.gtid_missing(position, state) == missing


def test_what_a_server_applied_includes_its_slave_position():
    # a replica restored by mariabackup: the copied GTIDs are in its gtid_slave_pos, its binary log is empty
    assert gtid.applied("", f"0-{S1}-10") == f"0-{S1}-10"
    assert gtid.applied(f"0-{S1}-8,0-{S2}-12", f"0-{S1}-10,1-{S1}-3") == f"0-{S1}-10,0-{S2}-12,1-{S1}-3"
    assert gtid.applied(f"0-{S1}-10", f"0-{S1}-7") == f"0-{S1}-10"
    assert mod.gtid_missing(f"0-{S1}-10", "", f"0-{S1}-10") == []
    assert mod.gtid_missing(f"0-{S1}-11", "", f"0-{S1}-10") == [f"0-{S1}-11"]
    assert mod.gtid_missing(f"0-{S1}-10", "") == [f"0-{S1}-10"]


@pytest.mark.parametrize(
    ("binlog", "slave", "resume"),
    [
        (f"0-{S1}-12", f"0-{S2}-9", f"0-{S1}-12"),  # an old primary: after its own last transaction
        ("", f"0-{S1}-10", f"0-{S1}-10"),  # restored by mariabackup, promoted, demoted: its binary log is empty
        (f"0-{S2}-8", f"0-{S1}-10,1-{S2}-3", f"0-{S1}-10,1-{S2}-3"),
        (f"0-{S2}-10", f"0-{S1}-10", f"0-{S2}-10"),  # a tie: its binary log
        ("", "", ""),
    ],
)
def test_where_a_demoted_server_resumes(binlog, slave, resume):
    assert gtid.resume_position(binlog, slave) == resume


@pytest.mark.parametrize(("position", "state"), [("0-1", "0-1-1"), ("0-1-1", "0-1-x"), (12, ""), ("0-1-1", "0-1-1,")])
def test_gtid_missing_refuses_bad_input(position, state):
    with pytest.raises(SaltInvocationError):
        mod.gtid_missing(position, state)


def test_gtid_missing_documents_itself():
    assert "CLI Example:" in mod.gtid_missing.__doc__
    assert "CLI Example:" in mod.source_binlog_state.__doc__
