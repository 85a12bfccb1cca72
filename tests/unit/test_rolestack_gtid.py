"""
The one GTID order of rolestack (``_utils/rolestack_gtid.order``), used by the execution module, the replica
state and the db runner. The module and the runner used to disagree on the same sequence number written by two
servers ("equal" in one, "diverged" in the other): these cases pin the answer for both.
"""

import pytest
import rolestack_gtid as gtid
from salt.exceptions import SaltInvocationError


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("0-1-100", "0-1-100", "equal"),
        ("0-1-101", "0-1-100", "ahead"),
        ("0-1-99", "0-1-100", "behind"),
        ("0-2-101", "0-1-100", "ahead"),  # sequence numbers order GTIDs, whatever the server
        (
            "0-2-100",
            "0-1-100",
            "diverged",
        ),  # the same number written by two servers: a fork (was "equal" in the module)
        ("0-1-100,1-2-5", "0-1-100", "ahead"),  # an extra domain
        ("0-1-100", "0-1-100,1-2-5", "behind"),
        ("0-1-101,1-2-5", "0-1-100,1-2-6", "diverged"),
        ("0-1-100,1-3-5", "0-1-100,1-2-5", "diverged"),  # a fork in a second domain only
        ("", "", "equal"),
        ("0-1-1", "", "ahead"),
        ("", "0-1-1", "behind"),
    ],
)
def test_order(a, b, order):
    assert gtid.order(a, b) == order
    assert gtid.at_least(a, b) is (order in ("equal", "ahead"))


def test_order_is_antisymmetric():
    flip = {"ahead": "behind", "behind": "ahead", "equal": "equal", "diverged": "diverged"}
    for a, b in [("0-1-5", "0-1-4"), ("0-1-5", "0-2-5"), ("0-1-5,1-1-1", "0-1-5"), ("0-1-4,1-1-2", "0-1-5,1-1-1")]:
        assert gtid.order(b, a) == flip[gtid.order(a, b)]


@pytest.mark.parametrize("bad", ["0-1", "zero", "0-1-1,0-2-2", "-1-1-1"])
def test_malformed_positions_are_refused(bad):
    with pytest.raises(SaltInvocationError):
        gtid.order(bad, "0-1-1")
