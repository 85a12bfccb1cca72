"""
Application databases in the lab (states/db/databases.sls): the inventory's `wiki` database and its account for
the app role, created on masterdb by the highstate and replicated; app1 logs in with its derived pillar
credentials over TLS; plain text is refused; hosts without the role get no secret; a bad pillar commit is refused.

test_7 moves masterdb around and hands it back, but nothing here assumes which host it is: the primary is read
from a db host's derived pillar.
"""

import time

import pytest

from tests.e2e.conftest import changed_states
from tests.e2e.conftest import failures
from tests.e2e.test_3_git_pillar import assert_push_refused
from tests.e2e.test_3_git_pillar import commit

APP = "app1"
USER = DATABASE = "wiki"
WANTED = ["ALTER", "CREATE", "DELETE", "DROP", "INDEX", "INSERT", "SELECT", "UPDATE"]


def pillar(lab, host, key="rolestack"):
    # salt 3008 masks pillar values in CLI output unless asked
    return lab.salt(host, "pillar.get", key, "unmask=True")[host]


def sql(lab, host, statement, check=True):
    return lab.sh(host, "mariadb", "--batch", "--skip-column-names", "-e", statement, check=check)


def app_login(lab, statement, *options, check=True):
    """A statement from app1 with the credentials its pillar holds, to the name its pillar gives."""
    rs = pillar(lab, APP)
    client, password = rs["db_client"], rs["secrets"]["db_users"][USER]
    return lab.sh(APP, "mariadb", "--batch", "--skip-column-names", "--connect-timeout=5", "-h", client["host"],
                  "-P", str(client["port"]), "-u", USER, f"-p{password}", *options, DATABASE, "-e", statement,
                  check=check)  # fmt: skip


@pytest.fixture(scope="module")
def topology(lab):
    """The current primary and its replicas, as the inventory says (test_7 moved masterdb and back)."""
    db = pillar(lab, "db2", "rolestack:db")
    primary = db["masterdb"]["name"]
    replicas = [peer["name"] for peer in db["peers"] if peer["name"] != primary]
    assert replicas, db
    return {"primary": primary, "replicas": replicas}


@pytest.fixture(scope="module")
def converged(lab, topology):
    result = lab.highstate()
    assert result["clean"], failures(result)
    return result


def grants(lab, host, address):
    lines = sql(lab, host, f"SHOW GRANTS FOR '{USER}'@'{address}'").stdout.splitlines()
    on_db = [line for line in lines if f" ON `{DATABASE}`.* " in line]
    assert len(on_db) == 1, lines
    return sorted(p.strip() for p in on_db[0].split(" ON ")[0].removeprefix("GRANT ").split(","))


def test_database_and_accounts_exist_on_masterdb(lab, topology, converged):
    primary = topology["primary"]
    assert sql(lab, primary, f"SHOW DATABASES LIKE '{DATABASE}'").stdout.split() == [DATABASE]
    accounts = sql(lab, primary, f"SELECT Host, ssl_type FROM mysql.user WHERE User = '{USER}'").stdout
    # one account per host with the app role (app1 in the small lab), from its inventory address, REQUIRE SSL
    assert [line.split("\t") for line in accounts.splitlines()] == [[lab.address(APP), "ANY"]]
    assert grants(lab, primary, lab.address(APP)) == WANTED


def test_app_logs_in_over_tls_and_writes_a_row(lab, converged):
    rs = pillar(lab, APP)
    assert rs["db_client"]["host"] == "masterdb.production.wpdn"
    assert rs["db_client"]["users"] == {USER: {"databases": [DATABASE], "ssl": True}}
    assert set(rs["secrets"]["db_users"]) == {USER}
    app_login(lab, "CREATE TABLE IF NOT EXISTS e2e_pages (id INT PRIMARY KEY, title VARCHAR(40));"
                   "REPLACE INTO e2e_pages VALUES (1, 'Main Page')", "--ssl")  # fmt: skip
    cipher = app_login(lab, "SHOW STATUS LIKE 'Ssl_cipher'", "--ssl").stdout.split()
    assert len(cipher) == 2 and cipher[1], cipher  # the session is encrypted
    # only its own database
    other = app_login(lab, "SELECT COUNT(*) FROM mysql.user", "--ssl", check=False)
    assert other.returncode != 0 and "denied" in other.stderr, other


def test_plain_text_login_is_refused(lab, converged):
    plain = app_login(lab, "SELECT 1", "--skip-ssl", check=False)
    assert plain.returncode != 0 and "Access denied" in plain.stderr, plain


def test_row_and_account_reach_the_replicas(lab, topology, converged):
    for replica in topology["replicas"]:
        deadline = time.monotonic() + 60
        while True:
            proc = sql(lab, replica, f"SELECT title FROM {DATABASE}.e2e_pages WHERE id = 1", check=False)
            if proc.returncode == 0 and proc.stdout.strip() == "Main Page":
                break
            assert time.monotonic() < deadline, (replica, proc.stdout, proc.stderr)
            time.sleep(0.5)
        assert grants(lab, replica, lab.address(APP)) == WANTED, replica


def test_hosts_without_the_role_get_no_db_secret(lab, topology):
    for host in lab.hosts:
        rs = pillar(lab, host)
        users = rs.get("secrets", {}).get("db_users")
        if "db" in rs["host"]["roles"]:
            assert users and set(users) == {USER}, host  # any db host may become masterdb
            assert "db_client" not in rs, host
        elif "app" in rs["host"]["roles"]:
            assert set(users) == {USER}, host
        else:
            assert users is None and "db_client" not in rs, host


def test_bad_commit_is_refused_naming_the_key_path_and_changes_nothing(lab, topology, converged):
    primary = topology["primary"]
    before = grants(lab, primary, lab.address(APP))

    def fly(data):
        data["databases"][DATABASE]["users"][USER]["privileges"].append("FLY")

    commit(lab, fly, "wiki may fly", push=False)
    assert_push_refused(lab, f"databases.{DATABASE}.users.{USER}.privileges[8]", "'FLY'")
    # the refused commit left the pillar as `converged` applied it: this is also the second highstate of the
    # databases and accounts, and it changes nothing anywhere
    result = lab.highstate()
    assert result["clean"], failures(result)
    assert not any(changed_states(result).values()), changed_states(result)
    assert grants(lab, primary, lab.address(APP)) == before
