"""
Application databases (states/db/databases.sls) applied for real to a private mariadbd: state.sls db.databases
with the pillar the rolestack ext_pillar derives for masterdb.

The SLS includes db.replication and requires its `db-replication-writable` state, which needs the db server of a
real host: a stand-in db/replication.sls (earlier in file_roots) holds only that state. The inventory is
pillar.example's moved to 127.0.0.0/24 with app1 at 127.0.0.1, so the derived account wiki@127.0.0.1 is the one
this test logs in with over TCP (the private server has no TLS: an account with REQUIRE SSL is refused).
"""

import contextlib

import pymysql
import pytest
import yaml

from tests.support.paths import STATES

PASSWORD = "example-wiki-db-0123456789"
WANTED = ["ALTER", "CREATE", "DELETE", "DROP", "INDEX", "INSERT", "SELECT", "UPDATE"]


@pytest.fixture(scope="module")
def server(service_factory):
    return service_factory("mariadb")


@pytest.fixture
def inventory(pillar_tree):
    """edit(function) changes the test's inventory (a dict) and writes it back."""
    path = pillar_tree / "inventory.yaml"
    text = path.read_text().replace("10.10.10.", "127.0.0.").replace("127.0.0.51", "127.0.0.1")
    data = yaml.safe_load(text)
    data["network"] = "127.0.0.0/24"

    def edit(change=None):
        if change:
            change(data)
        path.write_text(yaml.safe_dump(data))
        return data

    edit()
    return edit


@pytest.fixture
def apply(make_loaders, server, inventory, tmp_path):
    """apply(test=False) -> {state id: return} of state.sls db.databases on db1-masterdb, fresh pillar each time."""
    # a stand-in db.replication: only its db-replication-writable (read_only OFF), without the db server states
    stand_in = tmp_path / "stand-in"
    (stand_in / "db").mkdir(parents=True)
    (stand_in / "db" / "replication.sls").write_text(
        "db-replication-writable:\n  mariadb_replication.read_only:\n    - name: masterdb\n    - enabled: False\n"
    )

    def run(test=False):
        loaders = make_loaders(
            "db1-masterdb",
            file_roots={"base": [str(stand_in), str(STATES)]},
            **{"mariadb.unix_socket": str(server.socket)},
        )
        ret = loaders.modules.state.sls("db.databases", test=test).raw
        assert isinstance(ret, dict), ret
        ret = {key.split("_|-")[1]: value for key, value in ret.items()}
        assert ret.pop("db-replication-writable")["result"] is True
        return ret

    return run


def _sql(server, statement, args=None):
    return server.sql(statement, args, dicts=True)


def _accounts(server, user="wiki"):
    rows = _sql(server, "SELECT Host, ssl_type FROM mysql.user WHERE User = %s", (user,))
    return {(row["Host"].decode() if isinstance(row["Host"], bytes) else row["Host"]): row["ssl_type"] for row in rows}


def _db_grants(server, host, user="wiki"):
    rows = _sql(server, "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s"
                " AND TABLE_SCHEMA = 'wiki'", (f"'{user}'@'{host}'",))  # fmt: skip
    return sorted(row["PRIVILEGE_TYPE"] for row in rows)


@contextlib.contextmanager
def _refused(errno):
    """The server refuses with this error code. pymysql.OperationalError, never pymysql.err.OperationalError:
    once salt's mysql module is loaded (pymysql.install_as_MySQLdb(), then `import MySQLdb.converters`) the
    attribute pymysql.err is a second copy of that module, whose classes the connection does not raise."""
    with pytest.raises(pymysql.OperationalError) as err:
        yield
    assert err.value.args[0] == errno, err.value


def _login(server, host="127.0.0.1"):
    return pymysql.connect(host=host, port=server.port, user="wiki", password=PASSWORD, database="wiki")


@pytest.fixture
def clean(server):
    """Each test starts without the wiki database and accounts, and leaves none behind."""

    def wipe():
        for host in _accounts(server):
            _sql(server, f"DROP USER 'wiki'@'{host}'")
        _sql(server, "DROP USER IF EXISTS 'other'@'127.0.0.99'")
        _sql(server, "DROP DATABASE IF EXISTS wiki")

    wipe()
    yield
    wipe()


def test_create_exact_accounts_drop_stale_ones_then_nothing_to_do(server, apply, clean):
    # what an older inventory left: an account at an address no longer derived, a wrong password, no TLS
    # requirement and a privilege beyond the inventory's on a derived address; another user at the stale address
    _sql(server, "CREATE USER 'wiki'@'127.0.0.99' IDENTIFIED BY 'old-password'")
    _sql(server, "CREATE USER 'wiki'@'127.0.0.52' IDENTIFIED BY 'old-password'")
    _sql(server, "GRANT SELECT, EVENT, TRIGGER ON wiki.* TO 'wiki'@'127.0.0.52'")
    _sql(server, "CREATE USER 'other'@'127.0.0.99' IDENTIFIED BY 'other-password'")

    dry = apply(test=True)
    assert all(ret["result"] is not False for ret in dry.values()), dry
    assert dry["db-database-wiki"]["changes"] == {"created": "wiki"}
    assert dry["db-user-wiki-elsewhere"]["changes"] == {"deleted": ["wiki@127.0.0.99"]}
    assert dry["db-grant-wiki-127.0.0.52-wiki"]["changes"]["revoked"] == ["EVENT", "TRIGGER"]
    assert dry["db-grant-wiki-127.0.0.1-wiki"]["result"] is None  # the account does not exist yet
    assert set(_accounts(server)) == {"127.0.0.99", "127.0.0.52"}  # the dry run changed nothing
    assert not _sql(server, "SHOW DATABASES LIKE 'wiki'")

    first = apply()
    assert all(ret["result"] is True for ret in first.values()), first
    assert set(first) == {
        "db-database-wiki",
        "db-user-wiki-127.0.0.1",
        "db-user-wiki-127.0.0.52",
        "db-grant-wiki-127.0.0.1-wiki",
        "db-grant-wiki-127.0.0.52-wiki",
        "db-user-wiki-elsewhere",
    }
    schema = _sql(server, "SELECT DEFAULT_CHARACTER_SET_NAME AS cs, DEFAULT_COLLATION_NAME AS co"
                  " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'wiki'")  # fmt: skip
    assert schema == [{"cs": "utf8mb4", "co": "utf8mb4_unicode_ci"}]
    # the stale account is dropped, another user at that address is not; REQUIRE SSL (ssl_type ANY) on both
    assert _accounts(server) == {"127.0.0.1": "ANY", "127.0.0.52": "ANY"}
    assert _accounts(server, "other") == {"127.0.0.99": ""}
    assert first["db-user-wiki-127.0.0.52"]["changes"]["password"] == "changed"
    for host in ("127.0.0.1", "127.0.0.52"):
        assert _db_grants(server, host) == WANTED, host  # exactly the inventory's privileges

    # REQUIRE SSL: this server has no TLS, so the derived account cannot log in in plain text
    with _refused(1045):
        _login(server)

    second = apply()
    changed = {key: ret["changes"] for key, ret in second.items() if ret["changes"]}
    assert changed == {}
    assert all(ret["result"] is True for ret in second.values()), second
    dry = apply(test=True)
    assert all(ret["result"] is True and not ret["changes"] for ret in dry.values()), dry


def test_without_ssl_the_account_logs_in_and_writes(server, apply, inventory, clean):
    inventory(lambda data: data["databases"]["wiki"]["users"]["wiki"].update(ssl=False))
    assert all(ret["result"] is True for ret in apply().values())
    assert _accounts(server) == {"127.0.0.1": "", "127.0.0.52": ""}
    conn = _login(server)
    try:
        with conn.cursor() as cursor:
            cursor.execute("CREATE TABLE pages (id INT PRIMARY KEY, title VARCHAR(40))")
            cursor.execute("INSERT INTO pages VALUES (1, 'Main Page')")
            conn.commit()
            # exactly the granted privileges: no more (no GRANT OPTION, nothing outside wiki.*)
            with _refused(1044):
                cursor.execute("CREATE DATABASE wiki2")
            with _refused(1142):
                cursor.execute("CREATE TRIGGER t BEFORE INSERT ON pages FOR EACH ROW SET NEW.title = 'x'")
    finally:
        conn.close()
    assert _sql(server, "SELECT title FROM wiki.pages") == [{"title": "Main Page"}]

    # back to ssl: true, the requirement is added to the existing accounts
    inventory(lambda data: data["databases"]["wiki"]["users"]["wiki"].update(ssl=True))
    ret = apply()
    assert ret["db-user-wiki-127.0.0.1"]["changes"] == {"require": {"old": None, "new": "SSL"}}
    assert _accounts(server) == {"127.0.0.1": "ANY", "127.0.0.52": "ANY"}


def test_removed_host_loses_its_account_removed_database_stays(server, apply, inventory, clean):
    assert all(ret["result"] is True for ret in apply().values())
    _sql(server, "CREATE TABLE wiki.pages (id INT PRIMARY KEY)")
    _sql(server, "INSERT INTO wiki.pages VALUES (7)")

    # app2 leaves the inventory: its account goes; privileges narrowed: the extra ones are revoked
    def narrow(data):
        del data["hosts"]["app2"]
        data["databases"]["wiki"]["users"]["wiki"]["privileges"] = ["SELECT", "INSERT"]

    inventory(narrow)
    ret = apply()
    assert ret["db-user-wiki-elsewhere"]["changes"] == {"deleted": ["wiki@127.0.0.52"]}
    assert ret["db-grant-wiki-127.0.0.1-wiki"]["changes"]["revoked"] == sorted(set(WANTED) - {"SELECT", "INSERT"})
    assert _accounts(server) == {"127.0.0.1": "ANY"}
    assert _db_grants(server, "127.0.0.1") == ["INSERT", "SELECT"]

    # the database leaves the inventory (with its user): nothing is dropped, no data is lost
    def remove(data):
        del data["databases"]
        del data["secrets"]["db_users"]

    inventory(remove)
    assert apply() == {}
    assert _sql(server, "SELECT id FROM wiki.pages") == [{"id": 7}]
    assert _accounts(server) == {"127.0.0.1": "ANY"}
