"""
rolestack_x509: the checks decide on the minion what x509_v2's states would decide, and the rolestack_x509 states
(db.certs, salt.ca) run x509_v2 only when their check finds something to do. Each check is judged twice: by the
check, and by x509_v2's own state in test mode (a certificate through ca_server, its publish answered by the CA's
x509.sign_remote_certificate with the derived policies, as the master relays it); the check says "nothing to do"
exactly when the state does.
"""

import hashlib
import os

import pytest

from tests.support.paths import REPO

ZONE = "production.wpdn"
FILE = {"user": "root", "group": "root"}

STAND_IN_PUBLISH = '''\
"""Test stand-in: publish.publish runs the function on this minion as the CA's minion would run it for the
caller (its id in __pub_id), with the CA's policies in this minion's configuration."""

__virtualname__ = "publish"


def __virtual__():
    return __virtualname__


def publish(tgt, fun, arg=None, tgt_type="glob", returner="", timeout=5, via_master=None):
    with open(__opts__["rolestack_test_publish_log"], "a", encoding="utf-8") as log:
        log.write(f"{tgt} {fun}\\n")
    with open(__opts__["rolestack_test_publish_log"], encoding="utf-8") as log:
        calls = len(log.readlines())
    try:
        with open(__opts__["rolestack_test_publish_log"] + ".timeouts", encoding="utf-8") as timeouts:
            timing_out = int(timeouts.read())
    except FileNotFoundError:
        timing_out = 0
    if calls <= timing_out:
        return f"'{fun}' publish timed out"  # what salt's publish.publish returns when the master does not answer
    return {tgt: __salt__[fun](*(arg or []), __pub_id=__opts__["id"])}
'''


@pytest.fixture
def pki(make_loaders, ext_pillar, tmp_path):
    """db2's certificates as db.certs makes them, with the CA's policies (the CA's files under tmp_path)."""
    certs = ext_pillar("db2")["rolestack"]["db"]["certs"]
    policies = {}
    for name, items in ext_pillar("salt")["x509_signing_policies"].items():
        policy = {key: value for item in items for key, value in item.items() if key != "copypath"}
        policy.update(signing_private_key=str(tmp_path / "ca.key"), signing_cert=str(tmp_path / "ca.crt"))
        policies[name] = [{key: value} for key, value in policy.items()]
    stand_in = tmp_path / "stand-in-modules"
    stand_in.mkdir()
    (stand_in / "publish.py").write_text(STAND_IN_PUBLISH)
    loaders = make_loaders("db2", ext_pillar=[], x509_signing_policies=policies,
                           module_dirs=[str(stand_in), str(REPO / "_modules")],
                           rolestack_test_publish_log=str(tmp_path / "publish.log"))  # fmt: skip
    x509 = loaders.modules.x509
    make_ca(x509, tmp_path / "ca.key", tmp_path / "ca.crt")
    (tmp_path / "ca.pem").write_text((tmp_path / "ca.crt").read_text())  # the db host's copy, from the mine
    spec = certs["kinds"]["server"]
    key, cert = tmp_path / "server.key", tmp_path / "server.pem"
    key.write_text(x509.create_private_key(algo="rsa", keysize=2048))
    request = {"private_key": str(key), "CN": certs["cn"], "subjectAltName": certs["subject_alt_names"]}
    cert.write_text(x509.create_certificate(ca_server="salt", signing_policy=spec["policy"], **request))
    os.chmod(key, 0o640)
    os.chmod(cert, 0o644)
    return {
        "loaders": loaders,
        "dir": tmp_path,
        "policy": spec["policy"],
        "contents": dict(spec["policy_contents"], signing_cert=str(tmp_path / "ca.pem")),
        "cert_args": {"name": str(cert), **request, "ca_server": "salt", "days_remaining": 30, **FILE, "mode": "0644"},
        "key_args": {"name": str(key), "algo": "rsa", "keysize": 2048, **FILE, "mode": "0640"},
    }


def make_ca(x509, key, cert):
    key.write_text(x509.create_private_key(algo="rsa", keysize=2048))
    cert.write_text(x509.create_certificate(signing_private_key=str(key), CN=f"{ZONE} CA", O="production",
                                            basicConstraints="critical, CA:true, pathlen:0",
                                            keyUsage="critical, cRLSign, keyCertSign", days_valid=3650))  # fmt: skip


def state_has_nothing_to_do(loaders, fun, **args):
    """
    x509_v2's own verdict: the state in test mode finds nothing to change, in the certificate or key (its result
    and changes) nor in the file (its file.managed sub-state: a test run reports a wrong mode there only).
    """
    ret = loaders.modules.state.single(fun, test=True, **args)
    (state,) = getattr(ret, "raw", ret).values()
    assert state["result"] is not False, state
    file_changes = [sub["changes"] for sub in state.get("sub_state_run", []) if sub["changes"]]
    return state["result"] is True and not state["changes"] and not file_changes


def certificate_verdicts(pki):
    loaders = pki["loaders"]
    check = loaders.modules.rolestack_x509.certificate_current(signing_policy_contents=pki["contents"],
                                                               **pki["cert_args"])  # fmt: skip
    state = state_has_nothing_to_do(loaders, "x509.certificate_managed", signing_policy=pki["policy"],
                                    **pki["cert_args"])  # fmt: skip
    return check, state


def _names_moved(pki):
    # the inventory moved db2: the CA's policy and db2's pillar name the new address
    names = [*pki["cert_args"]["subjectAltName"][:-1], "IP:10.10.10.13"]
    pki["contents"]["subjectAltName"] = names
    for items in pki["loaders"].opts["x509_signing_policies"].values():
        for item in items:
            if "subjectAltName" in item:
                item["subjectAltName"] = names


def _ca_rotated(pki):
    # a new CA key and certificate, on the CA and in the db host's copy
    make_ca(pki["loaders"].modules.x509, pki["dir"] / "ca.key", pki["dir"] / "ca.crt")
    (pki["dir"] / "ca.pem").write_text((pki["dir"] / "ca.crt").read_text())


def _key_replaced(pki):
    (pki["dir"] / "server.key").write_text(pki["loaders"].modules.x509.create_private_key(algo="rsa", keysize=2048))


def _missing(pki):
    os.remove(pki["cert_args"]["name"])


def _not_a_certificate(pki):
    (pki["dir"] / "server.pem").write_text("not a certificate\n")


def _a_link(pki):
    target = pki["dir"] / "elsewhere.pem"
    os.rename(pki["cert_args"]["name"], target)
    os.symlink(target, pki["cert_args"]["name"])


@pytest.mark.parametrize(
    "change, nothing_to_do",
    [
        (None, True),
        (lambda pki: pki["cert_args"].update(days_remaining=100), False),  # issued for 90 days: renew
        (_names_moved, False),
        (_ca_rotated, False),
        (_key_replaced, False),
        (lambda pki: os.chmod(pki["cert_args"]["name"], 0o600), False),
        (lambda pki: pki["cert_args"].update(group="nogroup"), False),
        (_missing, False),
        (_not_a_certificate, False),
        (_a_link, False),  # the check leaves links to the state
    ],
    ids=[
        "as issued",
        "due for renewal",
        "names moved",
        "CA rotated",
        "key replaced",
        "mode",
        "group",
        "missing",
        "not a certificate",
        "a link",
    ],
)
def test_certificate_check_agrees_with_the_state(pki, change, nothing_to_do):
    if change:
        change(pki)
    check, state = certificate_verdicts(pki)
    if change is _a_link:
        assert check is False  # undecided: the state (which follows the link) decides
        return
    assert check is state is nothing_to_do


def test_the_certificate_check_never_asks_the_ca(pki):
    asked = pki["dir"] / "publish.log"
    asked.unlink()  # the certificate was issued through the CA
    check, state = certificate_verdicts(pki)
    assert check is state is True
    # the state asked the CA for its policy, once; the check did not
    assert asked.read_text() == "salt x509.sign_remote_certificate\n"


def key_verdicts(pki, **args):
    loaders = pki["loaders"]
    return (
        loaders.modules.rolestack_x509.private_key_current(**args),
        state_has_nothing_to_do(loaders, "x509.private_key_managed", **args),
    )


@pytest.mark.parametrize(
    "args, nothing_to_do",
    [
        ({}, True),
        ({"keysize": 4096}, False),
        ({"algo": "ec"}, False),
        ({"mode": "0600"}, False),
        ({"mode": None}, False),  # no mode: x509.private_key_managed's default, 0400
        ({"user": "nobody"}, False),
        ({"name": "/nonexistent/server.key"}, False),
    ],
)
def test_private_key_check_agrees_with_the_state(pki, args, nothing_to_do):
    args = {**pki["key_args"], **args}
    check, state = key_verdicts(pki, **{key: value for key, value in args.items() if value is not None})
    assert check is state is nothing_to_do


def test_a_key_is_checked_by_openssl_once_per_content(pki):
    checked = pki["loaders"].opts["cachedir"] + "/rolestack_x509/checked"
    key = pki["dir"] / "server.key"
    assert pki["loaders"].modules.rolestack_x509.private_key_current(**pki["key_args"])
    assert os.listdir(checked) == [hashlib.sha256(key.read_bytes()).hexdigest()]
    assert os.stat(checked).st_mode & 0o077 == 0
    assert pki["loaders"].modules.rolestack_x509.private_key_current(**pki["key_args"])
    _key_replaced(pki)
    os.chmod(key, 0o640)
    assert pki["loaders"].modules.rolestack_x509.private_key_current(**pki["key_args"])
    assert len(os.listdir(checked)) == 2


@pytest.mark.parametrize("change", [None, "other text", "mode"])
def test_pem_check_agrees_with_the_state(pki, change):
    loaders = pki["loaders"]
    name = pki["dir"] / "copy.pem"
    name.write_text((pki["dir"] / "ca.crt").read_text())
    os.chmod(name, 0o644)
    args = {"name": str(name), "text": (pki["dir"] / "ca.crt").read_text(), **FILE, "mode": "0644"}
    if change == "other text":
        args["text"] = (pki["dir"] / "server.pem").read_text()
    elif change == "mode":
        args["mode"] = "0640"
    check = loaders.modules.rolestack_x509.pem_current(**args)
    assert check is state_has_nothing_to_do(loaders, "x509.pem_managed", **args) is (change is None)


# --- the states -----------------------------------------------------------------------------------------------


def run_state(loaders, fun, test=False, **args):
    ret = loaders.modules.state.single(fun, test=test, **args)
    (state,) = getattr(ret, "raw", ret).values()
    return state


def run_certificate_state(pki, test=False):
    return run_state(pki["loaders"], "rolestack_x509.certificate_managed", test=test, signing_policy=pki["policy"],
                     signing_policy_contents=pki["contents"], **pki["cert_args"])  # fmt: skip


CHECKED_HERE = "is in the correct state (checked on this minion)"


@pytest.mark.parametrize("test", [False, True], ids=["apply", "test=True"])
def test_the_certificate_state_with_nothing_to_do_never_asks_the_ca(pki, test):
    asked = pki["dir"] / "publish.log"
    asked.unlink()
    state = run_certificate_state(pki, test)
    assert state["result"] is True and not state["changes"], state
    assert CHECKED_HERE in state["comment"]
    assert not asked.exists()


@pytest.mark.parametrize("test", [False, True], ids=["apply", "test=True"])
def test_the_certificate_state_lets_x509_renew_and_checks_again(pki, test):
    cert = pki["dir"] / "server.pem"
    before = cert.read_bytes()
    _key_replaced(pki)
    os.chmod(pki["dir"] / "server.key", 0o640)
    state = run_certificate_state(pki, test)
    assert state["changes"], state
    if test:
        assert state["result"] is None and cert.read_bytes() == before
        return
    assert state["result"] is True and cert.read_bytes() != before, state
    assert "still finds a difference" not in state["comment"]
    assert run_certificate_state(pki)["comment"].endswith(CHECKED_HERE)


def test_the_certificate_state_says_when_its_check_disagrees_after_a_change(pki):
    """days_remaining above the policy's 90 days: x509 renews, and the new certificate is still "due" for the
    check; the state says so (the next run asks x509_v2 again, which then decides alone)."""
    pki["cert_args"]["days_remaining"] = 100
    state = run_certificate_state(pki)
    assert state["result"] is True and state["changes"], state
    assert "rolestack_x509.certificate_current still finds a difference after the change" in state["comment"]


def _renewal_with_a_ca_timing_out(pki, times):
    (pki["dir"] / "publish.log.timeouts").write_text(str(times))
    (pki["dir"] / "publish.log").unlink()
    pki["cert_args"]["days_remaining"] = 100  # due: the state asks the CA
    return run_certificate_state(pki)


def test_a_ca_request_the_master_did_not_relay_is_asked_again(pki):
    state = _renewal_with_a_ca_timing_out(pki, 1)
    assert state["result"] is True and state["changes"], state
    assert (pki["dir"] / "publish.log").read_text().count("x509.sign_remote_certificate") >= 2


def test_a_ca_that_never_answers_fails_in_one_line_and_writes_nothing(pki):
    cert = pki["dir"] / "server.pem"
    before = cert.read_bytes()
    state = _renewal_with_a_ca_timing_out(pki, 100)
    assert state["result"] is False and not state["changes"], state
    assert "Traceback" not in state["comment"] and "\n" not in state["comment"], state["comment"]
    assert "the CA salt asked 3 times" in state["comment"], state["comment"]
    assert (pki["dir"] / "publish.log").read_text().count("x509.sign_remote_certificate") == 3
    assert cert.read_bytes() == before
    # what the state guards against: x509_v2's own state, asked once, ends in a traceback
    direct = run_state(pki["loaders"], "x509.certificate_managed", signing_policy=pki["policy"], **pki["cert_args"])
    assert direct["result"] is False and "Traceback" in direct["comment"], direct


@pytest.mark.parametrize("test", [False, True], ids=["apply", "test=True"])
def test_the_key_state(pki, test):
    key = pki["dir"] / "server.key"
    state = run_state(pki["loaders"], "rolestack_x509.private_key_managed", test=test, **pki["key_args"])
    assert state["result"] is True and not state["changes"] and CHECKED_HERE in state["comment"], state
    state = run_state(pki["loaders"], "rolestack_x509.private_key_managed", test=test, **{**pki["key_args"],
                                                                                          "mode": "0600"})  # fmt: skip
    if test:  # x509_v2 reports a mode it would change in its file.managed sub-state only
        assert state["result"] is not False and [sub for sub in state["sub_state_run"] if sub["changes"]], state
    else:
        assert state["result"] is True, state
    assert oct(os.stat(key).st_mode & 0o777) == ("0o640" if test else "0o600")


@pytest.mark.parametrize("test", [False, True], ids=["apply", "test=True"])
def test_the_pem_state(pki, test):
    name = pki["dir"] / "copy.pem"
    args = {"name": str(name), "text": (pki["dir"] / "ca.crt").read_text(), **FILE, "mode": "0644"}
    state = run_state(pki["loaders"], "rolestack_x509.pem_managed", test=test, **args)
    assert state["result"] is (None if test else True) and state["changes"], state
    assert name.exists() is not test
    if not test:
        state = run_state(pki["loaders"], "rolestack_x509.pem_managed", **args)
        assert state["result"] is True and not state["changes"] and CHECKED_HERE in state["comment"], state
