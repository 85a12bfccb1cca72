"""
The pure logic of the mariadb_replication module: GTID positions, SQL quoting, REQUIRE clauses, grants as
SHOW GRANTS prints them, the status merge and the connection rules (the server side is exercised in
tests/functional/test_mariadb_replication.py).
"""

import importlib.util

import pytest
from salt.exceptions import SaltInvocationError

from tests.support.paths import REPO


def _load_module():
    spec = importlib.util.spec_from_file_location("mariadb_replication", REPO / "_modules" / "mariadb_replication.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mr = _load_module()


# --- GTID positions ------------------------------------------------------------------------------------


def test_parse_gtid_multi_domain():
    assert mr._parse_gtid("0-1-100,1-2-7") == {0: (1, 100), 1: (2, 7)}
    assert mr._parse_gtid(" 0-1-100 , 5-3-1 ") == {0: (1, 100), 5: (3, 1)}
    assert mr._parse_gtid("0-4294967295-18446744073709551615") == {0: (4294967295, 18446744073709551615)}


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_parse_gtid_empty(empty):
    assert mr._parse_gtid(empty) == {}


@pytest.mark.parametrize(
    "bad",
    ["0-1", "0-1-2-3", "a-1-2", "0-1-2,", ",0-1-2", "0-1-2,,1-1-1", "0--1-2", "-0-1-2", "0-1-2;1-1-1", "0-1-x"],
)
def test_parse_gtid_malformed(bad):
    with pytest.raises(SaltInvocationError, match="malformed GTID"):
        mr._parse_gtid(bad)


def test_parse_gtid_rejects_duplicates_ranges_and_types():
    with pytest.raises(SaltInvocationError, match="twice"):
        mr._parse_gtid("0-1-5,0-2-6")
    with pytest.raises(SaltInvocationError, match="out of range"):
        mr._parse_gtid("4294967296-1-1")
    with pytest.raises(SaltInvocationError, match="out of range"):
        mr._parse_gtid("0-1-18446744073709551616")
    with pytest.raises(SaltInvocationError):
        mr._parse_gtid(12)


def test_gtid_compare_is_the_one_order():
    # a fork (the same sequence number from two servers) is not "at least": the module once called it equal
    assert mr.gtid_compare("0-2-100", "0-1-100") is False
    assert mr.gtid_compare("0-1-100", "0-1-100") is True


def test_gtid_compare_malformed():
    with pytest.raises(SaltInvocationError):
        mr.gtid_compare("0-1-1", "zero")


def test_gtid_most_advanced():
    assert mr.gtid_most_advanced({"db2": "0-1-100", "db3": "0-1-98", "db4": "0-1-99"}) == ["db2"]
    assert mr.gtid_most_advanced({"db2": "0-1-100", "db3": "0-1-100"}) == ["db2", "db3"]
    assert mr.gtid_most_advanced({"db2": "0-1-100,1-1-1", "db3": "0-1-101"}) == []
    with pytest.raises(SaltInvocationError):
        mr.gtid_most_advanced({})


def test_virtual_without_pymysql(monkeypatch):
    monkeypatch.setattr(mr, "HAS_PYMYSQL", False)
    ok, message = mr.__virtual__()
    assert ok is False
    assert message.endswith("PyMySQL is not installed")
    monkeypatch.setattr(mr, "HAS_PYMYSQL", True)
    assert mr.__virtual__() == "mariadb_replication"


def test_every_public_function_has_a_cli_example():
    public = [name for name, value in vars(mr).items() if callable(value) and not name.startswith("_")]
    public = [name for name in public if getattr(mr, name).__module__ == mr.__name__ and name != "MariaDBError"]
    assert "provision_replica" in public
    for name in public:
        assert "CLI Example:" in (getattr(mr, name).__doc__ or ""), name
