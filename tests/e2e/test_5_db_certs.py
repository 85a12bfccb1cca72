"""
Certificates: the salt host is the CA, db hosts get server and client certificates by x509_v2 remote signing, each
under its own policies (exact minion id, fixed names); a host removed from the db role stops qualifying at once.
"""

import subprocess

import pytest
import rolestack_highstate

from tests.e2e.test_3_git_pillar import commit
from tests.e2e.test_3_git_pillar import git
from tests.e2e.test_3_git_pillar import head as pillar_head

ZONE = "production.wpdn"
DB_HOSTS = ["db1-masterdb", "db2"]
SSL = "/etc/mysql/ssl"
CA_CRT = "/etc/pki/rolestack/ca.crt"


def _states(ret, host):
    """The state returns of one host, every state succeeded."""
    states = ret.get(host)
    assert isinstance(states, dict), f"{host}: {states}"
    failed = dict(rolestack_highstate.summarize(states)["failed"])
    assert not failed, failed
    return states


def _changed(states):
    return set(dict(rolestack_highstate.summarize(states)["changed"]))


def _apply(lab, host, sls, *extra):
    return _states(lab.salt(host, "state.apply", sls, *extra), host)


def _serial(lab, host, path):
    return int(lab.sh(host, "openssl", "x509", "-in", path, "-noout", "-serial").stdout.strip().split("=")[1], 16)


@pytest.fixture(scope="module")
def certs(lab):
    """salt.ca on the salt host, then db.certs on the db hosts (already converged if the highstate applies them)."""
    ca = _apply(lab, "salt", "salt.ca")
    ret = lab.salt("-L", ",".join(DB_HOSTS), "state.apply", "db.certs")
    return {"salt": ca, **{host: _states(ret, host) for host in DB_HOSTS}}


def test_the_ca_key_stays_on_the_salt_host(lab, certs):
    assert lab.sh("salt", "stat", "-c", "%U:%G %a", "/etc/pki/rolestack/ca.key").stdout.split() == ["root:root", "600"]
    assert lab.sh("salt", "stat", "-c", "%a", "/etc/pki/rolestack").stdout.strip() == "700"
    ca = lab.sh("salt", "openssl", "x509", "-in", CA_CRT, "-noout", "-subject", "-ext", "basicConstraints,keyUsage")
    assert f"CN = {ZONE} CA" in ca.stdout and "CA:TRUE" in ca.stdout and "Certificate Sign" in ca.stdout
    for host in DB_HOSTS:
        assert lab.sh(host, "test", "-e", "/etc/pki/rolestack", check=False).returncode != 0, host


@pytest.mark.parametrize("host", DB_HOSTS)
def test_db_host_files_and_modes(lab, certs, host):
    listing = lab.sh(host, "sh", "-c", f"cd {SSL} && stat -c '%n %U:%G %a' . *").stdout.splitlines()
    assert sorted(listing) == sorted(
        [
            ". root:mysql 750",
            "ca.pem root:mysql 644",
            "client.key root:mysql 640",
            "client.pem root:mysql 644",
            "server.key root:mysql 640",
            "server.pem root:mysql 644",
        ]
    )
    # the CA certificate installed from the mine is the salt host's
    assert lab.read(host, f"{SSL}/ca.pem") == lab.read("salt", CA_CRT)


@pytest.mark.parametrize("host", DB_HOSTS)
def test_db_certificates_verify_against_the_ca(lab, certs, host):
    for cert, purpose in (("server.pem", "sslserver"), ("client.pem", "sslclient")):
        verify = lab.sh(host, "openssl", "verify", "-purpose", purpose, "-CAfile", f"{SSL}/ca.pem", f"{SSL}/{cert}")
        assert verify.stdout.strip() == f"{SSL}/{cert}: OK"
    # a client certificate cannot serve
    wrong = lab.sh(host, "openssl", "verify", "-purpose", "sslserver", "-CAfile", f"{SSL}/ca.pem", f"{SSL}/client.pem",
                   check=False)  # fmt: skip
    assert wrong.returncode != 0
    # each certificate is for its own key
    for kind in ("server", "client"):
        pub_cert = lab.sh(host, "openssl", "x509", "-in", f"{SSL}/{kind}.pem", "-noout", "-pubkey").stdout
        pub_key = lab.sh(host, "openssl", "pkey", "-in", f"{SSL}/{kind}.key", "-pubout").stdout
        assert pub_cert == pub_key, kind


@pytest.mark.parametrize("host", DB_HOSTS)
def test_server_certificate_names_match_how_replicas_reach_it(lab, certs, host):
    names = [f"{host}.{ZONE}", host] + (["masterdb", f"masterdb.{ZONE}"] if host == "db1-masterdb" else [])
    for name in names:
        check = lab.sh(host, "openssl", "x509", "-in", f"{SSL}/server.pem", "-noout", "-checkhost", name).stdout
        assert f"Hostname {name} does match certificate" in check
    check = lab.sh(host, "openssl", "x509", "-in", f"{SSL}/server.pem", "-noout", "-checkip", lab.address(host))
    assert f"IP {lab.address(host)} does match certificate" in check.stdout
    other = "db2" if host == "db1-masterdb" else "masterdb"
    check = lab.sh(host, "openssl", "x509", "-in", f"{SSL}/server.pem", "-noout", "-checkhost", f"{other}.{ZONE}")
    assert "does NOT match" in check.stdout
    subject = lab.sh(host, "openssl", "x509", "-in", f"{SSL}/server.pem", "-noout", "-subject", "-ext",
                     "extendedKeyUsage,basicConstraints").stdout  # fmt: skip
    assert f"CN = {host}.{ZONE}" in subject and "TLS Web Server Authentication" in subject and "CA:FALSE" in subject


def test_the_ca_keeps_a_copy_of_what_it_issued(lab, certs):
    issued = lab.sh("salt", "ls", "/etc/pki/rolestack/issued").stdout.split()
    serials = {int(name.removesuffix(".crt"), 16) for name in issued}
    for host in DB_HOSTS:
        for kind in ("server", "client"):
            assert _serial(lab, host, f"{SSL}/{kind}.pem") in serials, (host, kind)


def test_a_second_apply_changes_nothing(lab, certs):
    assert _changed(_apply(lab, "salt", "salt.ca")) == set()
    for host in DB_HOSTS:
        assert _changed(_apply(lab, host, "db.certs")) == set(), host


def _request(lab, host, policy, *args):
    """x509.create_certificate on host against the CA under policy (a probe key made for it); the return."""
    lab.sh(host, "openssl", "genrsa", "-out", "/root/rolestack-probe.key", "2048")
    try:
        ret = lab.salt(host, "x509.create_certificate", f"ca_server={lab.lab.salt_host}", f"signing_policy={policy}",
                       "private_key=/root/rolestack-probe.key", *args)  # fmt: skip
        return ret[host]
    finally:
        lab.sh(host, "rm", "-f", "/root/rolestack-probe.key")


def test_a_non_db_host_is_refused(lab, certs):
    # the master's derived peer ACL lets no host without the db role publish to the CA: the request never reaches
    # it (the CA's own refusal of such a request, by policy, is tested in tests/functional/test_db_certs.py)
    for policy in ("rolestack_db_server_db2", "rolestack_db_client_db2", "rolestack_db_server_app1"):
        ret = _request(lab, "app1", policy, f"CN=app1.{ZONE}")
        assert "ca_server did not respond" in str(ret) and "BEGIN CERTIFICATE" not in str(ret), ret
    # and the SLS itself refuses to render on a host without role db
    ret = lab.salt("app1", "state.apply", "db.certs")
    assert "no rolestack:db pillar for app1" in str(ret["app1"])


def test_a_db_host_cannot_use_another_db_host_policy(lab, certs):
    for kind in ("server", "client"):
        ret = _request(lab, "db2", f"rolestack_db_{kind}_db1-masterdb", f"CN=masterdb.{ZONE}")
        assert "minion not permitted to use specified signing policy" in str(ret), ret


def test_the_policy_overrides_what_a_db_host_asks(lab, certs):
    """db2 under its own policy asks for masterdb's names, CA:true and 10 years: it gets its own names, 90 days."""
    pem = _request(lab, "db2", "rolestack_db_server_db2", f"CN=masterdb.{ZONE}", "subjectAltName=DNS:masterdb",
                   "basicConstraints=critical, CA:true", "days_valid=3650")  # fmt: skip
    assert "BEGIN CERTIFICATE" in pem, pem
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-ext", "basicConstraints,extendedKeyUsage,subjectAltName",
         "-checkend", str(91 * 86400)],
        input=pem, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "CA:FALSE" in text.stdout and "TLS Web Server Authentication" in text.stdout
    assert "Certificate will expire" in text.stdout  # the policy's 90 days, not the 3650 asked for
    assert f"CN = db2.{ZONE}" in text.stdout and "masterdb" not in text.stdout, text.stdout


def test_a_host_removed_from_the_db_role_stops_qualifying_at_once(lab, certs):
    """The salt host's state run reloads the CA's pillar when the policies changed: no restart, no waiting."""
    head = pillar_head(lab)
    commit(lab, lambda data: data["hosts"]["db2"].update(roles=["app"]), "db2 leaves the db role")
    try:
        changed = _changed(_apply(lab, "salt", "salt.ca"))
        assert {"salt-ca-policies-record", "salt-ca-policies-loaded"} <= changed, changed
        ret = _request(lab, "db2", "rolestack_db_server_db2", f"CN=db2.{ZONE}")
        assert "signing_policy must be specified and defined on signing minion" in str(ret), ret
    finally:
        git(lab, "revert", "--no-edit", f"{head}..HEAD")
        _apply(lab, "salt", "salt.ca")
    assert "BEGIN CERTIFICATE" in _request(lab, "db2", "rolestack_db_server_db2", f"CN=db2.{ZONE}")
    assert _changed(_apply(lab, "salt", "salt.ca")) == set()


def test_renewal_is_scheduled_daily(lab, certs):
    schedule = lab.salt("db2", "schedule.list", "return_yaml=False")["db2"]
    job = schedule["rolestack-db-certs"]
    assert job["function"] == "state.apply" and job["args"] == ["db.certs"] and job["hours"] == 24


def test_renewal_when_fewer_days_are_left_than_days_remaining(lab, certs):
    keys = lab.sh("db2", "sh", "-c", f"sha256sum {SSL}/*.key").stdout
    before = {kind: _serial(lab, "db2", f"{SSL}/{kind}.pem") for kind in ("server", "client")}
    # the certificates are valid for 90 days: asking for 100 days left renews both
    states = _apply(lab, "db2", "db.certs", 'pillar={"rolestack_certs": {"days_remaining": 100}}')
    changed = _changed(states)
    assert (
        {"db-certs-server-cert", "db-certs-client-cert"}
        <= changed
        <= {
            "db-certs-server-cert",
            "db-certs-client-cert",
            "db-certs-reload-mariadb",
        }
    ), changed
    for state in states.values():
        if state["__id__"] in ("db-certs-server-cert", "db-certs-client-cert") and "expiration" in state["changes"]:
            break
    else:
        raise AssertionError(f"no renewal for expiration: {states}")
    after = {kind: _serial(lab, "db2", f"{SSL}/{kind}.pem") for kind in ("server", "client")}
    assert all(after[kind] != before[kind] for kind in before), (before, after)
    assert lab.sh("db2", "sh", "-c", f"sha256sum {SSL}/*.key").stdout == keys  # same keys, new certificates
    verify = lab.sh("db2", "openssl", "verify", "-CAfile", f"{SSL}/ca.pem", f"{SSL}/server.pem", f"{SSL}/client.pem")
    assert verify.stdout.count(": OK") == 2
    # back to the default (30 days): nothing to do
    assert _changed(_apply(lab, "db2", "db.certs")) == set()
