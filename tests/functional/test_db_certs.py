"""
Certificates: the salt host is the CA (salt.ca), db hosts get a server and a client certificate by x509_v2 remote
signing (db.certs). Through the state compiler only (show_sls, test=True): nothing is written to this machine's
/etc. Remote signing itself (peer publish, the policies' minion match on the master) needs a master and minions:
the e2e tier (tests/e2e/test_5_db_certs.py) does it in the lab.

db.certs reads the CA certificate from the salt mine. A masterless minion's mine only answers for the minion
itself, so for db hosts a stand-in `mine` module (module_dirs) answers mine.get from the opts key
`rolestack_test_mine`, as the master would.
"""

import os
import subprocess

import pytest
import salt.utils.x509 as x509util

from tests.support.paths import REPO

ZONE = "production.wpdn"
CA_KEY = "/etc/pki/rolestack/ca.key"
CA_CRT = "/etc/pki/rolestack/ca.crt"
SSL_DIR = "/etc/mysql/ssl"
CA_IDS = ["salt-ca-dir", "salt-ca-issued-dir", "salt-ca-key", "salt-ca-cert", "salt-ca-mine-send"]
DB_IDS = [
    "db-certs-group",
    "db-certs-dir",
    "db-certs-ca",
    "db-certs-server-key",
    "db-certs-server-cert",
    "db-certs-client-key",
    "db-certs-client-cert",
    "db-certs-reload-mariadb",
    "db-certs-renewal",
]


DB2_NAMES = [f"DNS:db2.{ZONE}", "DNS:db2", "IP:10.10.10.12"]
MASTERDB_NAMES = [
    f"DNS:db1-masterdb.{ZONE}",
    "DNS:db1-masterdb",
    f"DNS:masterdb.{ZONE}",
    "DNS:masterdb",
    "IP:10.10.10.11",
]
MINE_FUNCTION = {"x509.get_pem_entries": [{"glob_path": CA_CRT}]}

STAND_IN_MINE = '''\
"""Test stand-in: mine.get answers from opts["rolestack_test_mine"] ({minion: {function: data}})."""
import fnmatch

__virtualname__ = "mine"


def __virtual__():
    return __virtualname__


def get(tgt, fun, tgt_type="glob", exclude_minion=False):
    data = __opts__.get("rolestack_test_mine") or {}
    if tgt_type == "list":
        targets = tgt.split(",") if isinstance(tgt, str) else list(tgt)
        wanted = lambda minion: minion in targets
    else:
        wanted = lambda minion: fnmatch.fnmatch(minion, tgt)
    return {minion: funs[fun] for minion, funs in data.items() if wanted(minion) and fun in funs}
'''


def _args(high, state_id):
    """The arguments of a state in show_sls output, as one dict."""
    body = high[state_id]
    fun_args = next(value for key, value in body.items() if not key.startswith("__"))
    args = {}
    for arg in fun_args:
        if isinstance(arg, dict):
            args.update(arg)
        else:
            args["__fun__"] = arg
    return args


def _errors(high):
    assert isinstance(high, list), high
    return "\n".join(high)


@pytest.fixture(scope="module")
def ca_pem():
    """A real self-signed CA certificate (what the mine holds after salt.ca ran), made with openssl."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=REPO / ".tmp") as tmp:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ZONE} CA",
             "-keyout", os.path.join(tmp, "ca.key"), "-out", os.path.join(tmp, "ca.crt")],
            check=True, capture_output=True,
        )  # fmt: skip
        with open(os.path.join(tmp, "ca.crt"), encoding="ascii") as handle:
            return handle.read()


@pytest.fixture
def db_loaders(make_loaders, tmp_path, ca_pem):
    """db_loaders(minion_id, mine_id='salt') -> loaders whose mine holds the CA certificate of minion mine_id."""
    stand_in = tmp_path / "stand-in-modules"
    stand_in.mkdir()
    (stand_in / "mine.py").write_text(STAND_IN_MINE)

    def make(minion_id, mine_id="salt"):
        mine = {mine_id: {"x509.get_pem_entries": {CA_CRT: ca_pem}}} if mine_id else {}
        return make_loaders(minion_id, module_dirs=[str(stand_in), str(REPO / "_modules")], rolestack_test_mine=mine)

    return make


# --- the contract with the rolestack ext_pillar --------------------------------------------------------------


def _merged(items):
    policy = {}
    for item in items:
        policy.update(item)
    return policy


def test_salt_host_pillar_holds_one_policy_per_db_host_and_kind(ext_pillar):
    policies = ext_pillar("salt").get("x509_signing_policies")
    assert policies, "the rolestack ext_pillar gives the salt host no x509_signing_policies"
    assert sorted(policies) == sorted(f"rolestack_db_{kind}_{host}" for host in ("db1-masterdb", "db2")
                                      for kind in ("server", "client"))  # fmt: skip
    for host, names in (("db2", DB2_NAMES), ("db1-masterdb", MASTERDB_NAMES)):
        for kind, eku in (("server", "serverAuth"), ("client", "clientAuth")):
            policy = _merged(policies[f"rolestack_db_{kind}_{host}"])
            assert policy["minions"] == host, policy
            assert (policy["CN"], policy["subjectAltName"]) == (f"{host}.{ZONE}", names), policy
            assert policy["signing_private_key"] == CA_KEY and policy["signing_cert"] == CA_CRT, policy
            assert policy["extendedKeyUsage"] == eku, policy
            assert "CA:false" in policy["basicConstraints"], policy
            assert 30 < policy["days_valid"] <= 398, policy


def test_only_the_salt_host_gets_the_policies_and_publishes_the_ca(ext_pillar):
    assert (
        ext_pillar("salt")["rolestack"]["mine_functions"]["x509.get_pem_entries"]
        == MINE_FUNCTION["x509.get_pem_entries"]
    )
    for minion in ("db2", "app1"):
        pillar = ext_pillar(minion)
        assert "x509_signing_policies" not in pillar, minion
        assert "x509.get_pem_entries" not in pillar["rolestack"]["mine_functions"], minion


# --- salt.ca ---------------------------------------------------------------------------------------------------


def test_ca_dry_run(make_loaders):
    existed = os.path.exists("/etc/pki/rolestack")
    ret = make_loaders("salt").modules.state.sls("salt.ca", test=True)
    assert not ret.failed, ret.raw
    assert "Traceback" not in str(ret.raw)
    by_id = {state.id: state for state in ret}
    assert set(CA_IDS) <= set(by_id), sorted(by_id)
    assert "salt-ca-policies-pending" not in by_id
    assert by_id["salt-ca-key"].result is None and by_id["salt-ca-cert"].result is None
    assert os.path.exists("/etc/pki/rolestack") == existed


def test_ca_key_certificate_and_mine(make_loaders):
    high = make_loaders("salt").modules.state.show_sls("salt.ca")
    assert isinstance(high, dict), high
    key = _args(high, "salt-ca-key")
    assert (key["name"], key["mode"], key["keysize"], key["user"]) == (CA_KEY, "0600", 4096, "root")
    assert "new" not in key  # created once, never replaced
    cert = _args(high, "salt-ca-cert")
    assert cert["name"] == CA_CRT and cert["signing_private_key"] == CA_KEY and "signing_cert" not in cert
    assert cert["basicConstraints"] == "critical, CA:true, pathlen:0"
    assert cert["keyUsage"] == "critical, cRLSign, keyCertSign"
    assert cert["CN"] == f"{ZONE} CA" and cert["days_valid"] == 3650 and cert["days_remaining"] == 365
    assert _args(high, "salt-ca-dir")["mode"] == "0700"
    send = _args(high, "salt-ca-mine-send")
    assert send["mine.send"] == [{"name": "x509.get_pem_entries"}, {"glob_path": CA_CRT}]
    # nothing in the mine yet (and no CA on this machine): published at once, not only on a change
    assert "onchanges" not in send


def test_ca_reloads_its_pillar_when_the_policies_change(make_loaders, ext_pillar):
    """x509_v2 reads the policies from the CA minion's loaded pillar: salt.ca records the policies it was rendered
    with and refreshes that pillar when they changed (and every minute), so a host leaving the db role is refused."""
    high = make_loaders("salt").modules.state.show_sls("salt.ca")
    assert isinstance(high, dict), high
    record = _args(high, "salt-ca-policies-record")
    assert record["name"] == "/etc/pki/rolestack/policies.json" and record["mode"] == "0600"
    assert record["dataset"] == ext_pillar("salt")["x509_signing_policies"]
    loaded = _args(high, "salt-ca-policies-loaded")
    assert loaded["saltutil.refresh_pillar"] == [{"wait": True}]
    assert loaded["onchanges"] == [{"file": "salt-ca-policies-record"}]
    refresh = _args(high, "salt-ca-policies-refresh")
    assert (refresh["function"], refresh["seconds"]) == ("saltutil.refresh_pillar", 60)
    # nothing re-validates the generated policies in Jinja
    assert "salt-ca-policies-pending" not in high


@pytest.mark.parametrize("minion_id", ["db2", "app1"])
def test_ca_only_on_the_salt_host(make_loaders, minion_id):
    high = make_loaders(minion_id).modules.state.show_sls("salt.ca")
    assert f"salt.ca applies only to the host with role salt in the inventory (the CA), not to {minion_id}" in _errors(
        high
    )


def test_salt_role_includes_the_ca(make_loaders):
    high = make_loaders("salt").modules.state.show_sls("salt")
    assert isinstance(high, dict), high
    assert set(CA_IDS) <= set(high) and "salt-dns-zone" in high


# --- db.certs --------------------------------------------------------------------------------------------------


def test_db_certs_without_the_ca_in_the_mine_fails_clearly(db_loaders):
    high = db_loaders("db2", mine_id=None).modules.state.show_sls("db.certs")
    errors = _errors(high)
    assert "the CA certificate is not in the salt mine" in errors
    assert "salt -C 'I@rolestack:host:roles:salt' state.apply salt" in errors


@pytest.mark.parametrize("minion_id", ["app1", "salt"])
def test_db_certs_only_on_db_hosts(db_loaders, minion_id):
    high = db_loaders(minion_id).modules.state.show_sls("db.certs")
    assert f"no rolestack:db pillar for {minion_id}: db.certs applies only to hosts with role db" in _errors(high)


def test_db_certs_request_names_policies_and_files(db_loaders, ca_pem):
    high = db_loaders("db2").modules.state.show_sls("db.certs")
    assert isinstance(high, dict), high
    assert set(DB_IDS) <= set(high), sorted(high)
    assert _args(high, "db-certs-ca")["text"] == ca_pem
    assert _args(high, "db-certs-ca")["name"] == f"{SSL_DIR}/ca.pem"
    assert (_args(high, "db-certs-dir")["group"], _args(high, "db-certs-dir")["mode"]) == ("mysql", "0750")
    for kind in ("server", "client"):
        key = _args(high, f"db-certs-{kind}-key")
        assert (key["name"], key["user"], key["group"], key["mode"]) == (
            f"{SSL_DIR}/{kind}.key",
            "root",
            "mysql",
            "0640",
        )
        cert = _args(high, f"db-certs-{kind}-cert")
        assert cert["name"] == f"{SSL_DIR}/{kind}.pem" and cert["private_key"] == f"{SSL_DIR}/{kind}.key"
        # its own policy (the CA fixes the names under it); the same names requested, from the pillar
        assert (cert["ca_server"], cert["signing_policy"]) == ("salt", f"rolestack_db_{kind}_db2")
        assert cert["CN"] == f"db2.{ZONE}"
        assert cert["subjectAltName"] == DB2_NAMES
        assert cert["days_remaining"] == 30
        assert (cert["group"], cert["mode"]) == ("mysql", "0644")
        # the CA decides validity and usages: the request carries none
        assert not {"days_valid", "extendedKeyUsage", "basicConstraints", "keyUsage"} & set(cert)
    reload_ = _args(high, "db-certs-reload-mariadb")
    assert "FLUSH LOCAL SSL" in reload_["name"] and reload_["onlyif"] == "mariadb-admin --silent ping"
    renewal = _args(high, "db-certs-renewal")
    assert (renewal["function"], renewal["job_args"], renewal["hours"]) == ("state.apply", ["db.certs"], 24)


def test_masterdb_also_answers_as_masterdb(db_loaders):
    high = db_loaders("db1-masterdb").modules.state.show_sls("db.certs")
    assert isinstance(high, dict), high
    assert _args(high, "db-certs-server-cert")["subjectAltName"] == MASTERDB_NAMES
    assert _args(high, "db-certs-server-cert")["signing_policy"] == "rolestack_db_server_db1-masterdb"


def test_the_ca_is_found_by_its_inventory_name_only(db_loaders):
    """One minion id per host: a minion under the salt host's FQDN is not the CA."""
    high = db_loaders("db2", mine_id=f"salt.{ZONE}").modules.state.show_sls("db.certs")
    assert "the CA certificate is not in the salt mine" in _errors(high)


def _function(high, state_id):
    """The state function of a state in show_sls output, as module.function."""
    module = next(key for key in high[state_id] if not key.startswith("__"))
    return f"{module}.{_args(high, state_id)['__fun__']}"


@pytest.mark.parametrize("host", ["db2", "db1-masterdb"])
def test_each_certificate_file_is_a_rolestack_x509_state_checked_against_the_pillar_policy(db_loaders, ext_pillar,
                                                                                         host):  # fmt: skip
    """x509_v2's states, decided on the host first (rolestack_x509): no unless check (salt loads every state module
    for the first one of a run), and each certificate checked against the CA's policy as the db host's pillar holds
    it."""
    high = db_loaders(host).modules.state.show_sls("db.certs")
    assert isinstance(high, dict), high
    kinds = ext_pillar(host)["rolestack"]["db"]["certs"]["kinds"]
    assert _function(high, "db-certs-ca") == "rolestack_x509.pem_managed"
    for kind, spec in kinds.items():
        assert _function(high, f"db-certs-{kind}-key") == "rolestack_x509.private_key_managed"
        assert _function(high, f"db-certs-{kind}-cert") == "rolestack_x509.certificate_managed"
        cert = _args(high, f"db-certs-{kind}-cert")
        assert (cert["signing_policy"], cert["signing_policy_contents"]) == (spec["policy"], spec["policy_contents"])
    assert not [state_id for state_id in high if "unless" in _args(high, state_id)]


def test_the_ca_files_are_rolestack_x509_states(make_loaders):
    high = make_loaders("salt").modules.state.show_sls("salt.ca")
    assert isinstance(high, dict), high
    assert _function(high, "salt-ca-key") == "rolestack_x509.private_key_managed"
    assert _function(high, "salt-ca-cert") == "rolestack_x509.certificate_managed"
    assert not [state_id for state_id in high if "unless" in _args(high, state_id)]


def test_a_forced_renewal_through_the_pillar(db_loaders):
    high = db_loaders("db2").modules.state.show_sls("db.certs", pillar={"rolestack_certs": {"days_remaining": 400}})
    assert _args(high, "db-certs-server-cert")["days_remaining"] == 400
    assert _args(high, "db-certs-client-cert")["days_remaining"] == 400


def test_db_certs_dry_run(db_loaders):
    existed = os.path.exists(SSL_DIR)
    ret = db_loaders("db2").modules.state.sls("db.certs", test=True)
    assert not ret.failed, ret.raw
    assert "Traceback" not in str(ret.raw)
    by_id = {state.id: state for state in ret}
    assert set(DB_IDS) - {"db-certs-reload-mariadb"} <= set(by_id), sorted(by_id)
    assert by_id["db-certs-server-cert"].result is None  # would be created (the CA is never asked in a dry run)
    assert os.path.exists(SSL_DIR) == existed


# --- what the CA would issue for these requests ------------------------------------------------------------------


def test_policies_and_requests_give_certificates_openssl_accepts(db_loaders, ext_pillar, tmp_path):
    """The CA's key and certificate as salt.ca renders them, then each request merged with its policy and signed
    locally (what sign_remote_certificate does on the CA), under tmp_path."""
    import salt.utils.x509 as x509util

    salt_high = db_loaders("salt").modules.state.show_sls("salt.ca")
    policies = ext_pillar("salt")["x509_signing_policies"]
    loaders = db_loaders("db1-masterdb")
    high = loaders.modules.state.show_sls("db.certs")
    assert isinstance(high, dict), high
    x509 = loaders.modules.x509
    ca_args = {k: v for k, v in _args(salt_high, "salt-ca-cert").items() if k not in ("name", "__fun__", "require",
               "user", "group", "mode", "days_remaining", "order")}  # fmt: skip
    ca_key, ca_crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    ca_key.write_text(x509.create_private_key(algo="rsa", keysize=2048))
    ca_args["signing_private_key"] = str(ca_key)
    ca_crt.write_text(x509.create_certificate(**ca_args))

    for kind, purpose in (("server", "sslserver"), ("client", "sslclient")):
        key = tmp_path / f"{kind}.key"
        key.write_text(x509.create_private_key(algo="rsa", keysize=2048))
        request = {k: v for k, v in _args(high, f"db-certs-{kind}-cert").items()
                   if k in ("CN", "subjectAltName")}  # fmt: skip
        request["private_key"] = str(key)
        policy = _merged(policies[_args(high, f"db-certs-{kind}-cert")["signing_policy"]])
        policy.pop("minions")
        policy.pop("copypath")
        policy.update(signing_private_key=str(ca_key), signing_cert=str(ca_crt))
        (tmp_path / f"{kind}.pem").write_text(x509.create_certificate(**x509util.merge_signing_policy(policy, request)))
        verify = subprocess.run(
            ["openssl", "verify", "-purpose", purpose, "-CAfile", str(ca_crt), str(tmp_path / f"{kind}.pem")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stdout + verify.stderr
    # (openssl 3.0 reports no match when -checkhost is combined with -ext: two runs)
    check = "".join(
        subprocess.run(
            ["openssl", "x509", "-in", str(tmp_path / "server.pem"), "-noout", *options],
            capture_output=True, text=True, check=True,
        ).stdout
        for options in (["-checkhost", f"masterdb.{ZONE}", "-checkip", "10.10.10.11"],
                        ["-ext", "extendedKeyUsage,basicConstraints"])
    )  # fmt: skip
    assert f"Hostname masterdb.{ZONE} does match certificate" in check
    assert "IP 10.10.10.11 does match certificate" in check
    assert "TLS Web Server Authentication" in check and "CA:FALSE" in check
    wrong = subprocess.run(
        ["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(ca_crt), str(tmp_path / "client.pem")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert wrong.returncode != 0  # a client certificate cannot serve


# --- the CA itself: x509.sign_remote_certificate as peer publish runs it on the salt host ------------------------


@pytest.fixture
def ca_signs(make_loaders, ext_pillar, tmp_path):
    """sign(requester_id, policy, **request) -> (certificate PEM or None, errors): the CA's x509 module with the
    derived policies (their CA key and certificate made under tmp_path), called as peer publish calls it."""
    policies = {}
    for name, items in ext_pillar("salt")["x509_signing_policies"].items():
        policy = _merged(items)
        policy.update(signing_private_key=str(tmp_path / "ca.key"), signing_cert=str(tmp_path / "ca.crt"))
        policy.pop("copypath")
        policies[name] = [{key: value} for key, value in policy.items()]
    # no pillar here: x509_v2 falls back to the minion configuration for x509_signing_policies
    x509 = make_loaders("salt", ext_pillar=[], x509_signing_policies=policies).modules.x509
    (tmp_path / "ca.key").write_text(x509.create_private_key(algo="rsa", keysize=2048))
    (tmp_path / "ca.crt").write_text(
        x509.create_certificate(
            signing_private_key=str(tmp_path / "ca.key"), CN=f"{ZONE} CA", basicConstraints="critical, CA:true"
        )
    )
    (tmp_path / "req.key").write_text(x509.create_private_key(algo="rsa", keysize=2048))

    def sign(requester, policy, **request):
        ret = x509.sign_remote_certificate(policy, {"private_key": str(tmp_path / "req.key"), **request},
                                           __pub_id=requester)  # fmt: skip
        if not ret["data"]:
            return None, ret["errors"]
        return x509util.to_pem(x509util.load_cert(ret["data"])).decode(), ret["errors"]

    return sign


def _names(pem):
    text = subprocess.run(["openssl", "x509", "-noout", "-subject", "-ext", "subjectAltName"], input=pem,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    return text


def test_the_ca_signs_a_db_host_for_its_own_names_only(ca_signs):
    pem, errors = ca_signs("db2", "rolestack_db_server_db2", CN=f"db2.{ZONE}", subjectAltName=DB2_NAMES)
    assert pem, errors
    names = _names(pem)
    assert f"CN = db2.{ZONE}" in names and f"DNS:db2.{ZONE}, DNS:db2, IP Address:10.10.10.12" in names
    # asking for another host's names under its own policy: the policy's names are what it gets
    pem, errors = ca_signs("db2", "rolestack_db_server_db2", CN=f"masterdb.{ZONE}",
                           subjectAltName=["DNS:masterdb", f"DNS:masterdb.{ZONE}", "IP:10.10.10.11"])  # fmt: skip
    assert pem, errors
    names = _names(pem)
    assert f"CN = db2.{ZONE}" in names and "masterdb" not in names and "10.10.10.11" not in names


@pytest.mark.parametrize(
    "requester, policy",
    [
        ("db2", "rolestack_db_server_db1-masterdb"),  # another db host's policy
        ("db2", "rolestack_db_client_db1-masterdb"),
        (f"db2.{ZONE}", "rolestack_db_server_db2"),  # the host's FQDN is not its minion id
        ("db20", "rolestack_db_server_db2"),
        ("app1", "rolestack_db_client_db2"),
    ],
)
def test_the_ca_refuses_another_host_policy(ca_signs, requester, policy):
    pem, errors = ca_signs(requester, policy, CN=f"db1-masterdb.{ZONE}")
    assert pem is None and errors == ["minion not permitted to use specified signing policy"], errors


def test_the_ca_has_no_policy_for_a_non_db_host(ca_signs):
    pem, errors = ca_signs("app1", "rolestack_db_server_app1", CN=f"app1.{ZONE}")
    assert pem is None and "signing_policy must be specified and defined on signing minion" in errors
