"""
The rolestack certificate states: ``x509_v2``'s ``pem_managed``, ``private_key_managed`` and
``certificate_managed``, decided on the minion first (``states/db/certs.sls``, ``states/salt/ca.sls``).

Each state asks the ``rolestack_x509`` execution module whether x509_v2's state would change anything (the same
comparisons, made without asking the CA, a key checked by OpenSSL once per content). When it would not, the state
reports the file in the correct state and x509_v2 is not run. Otherwise x509_v2's own state runs with every
argument as given, and decides; ``test=True`` reaches it unchanged. After a change the check runs again.

Why states rather than an ``unless`` check on the x509 states: salt 3008 answers the first ``unless`` of a run by
loading every state module (it looks for a ``mod_run_check``), about 0.75 s of each no-op highstate.

A certificate with ``ca_server`` is signed through a publish relayed by the master. When the master does not relay
it in time, x509_v2 says "ca_server did not respond", or lets the timeout through as an exception (salt's publish
returns the text "... publish timed out", which the module then indexes as a dict). The state asks the CA again, up
to ``CA_ATTEMPTS`` times; nothing is written before the CA has signed. A failure is one line in the comment, its
traceback in the minion log.
"""

import logging
import time

log = logging.getLogger(__name__)

__virtualname__ = "rolestack_x509"

# how many times a certificate is requested from a CA that did not answer, and the pause between requests
CA_ATTEMPTS = 3
CA_PAUSE_S = 1
CA_UNANSWERED = "ca_server did not respond"


def __virtual__():
    if "rolestack_x509.certificate_current" not in __salt__:
        return (False, "rolestack_x509: the rolestack_x509 execution module did not load (it needs x509_v2's)")
    return __virtualname__


def pem_managed(name, text, **kwargs):
    """
    The file ``name`` holds exactly the PEM entry of ``text``: ``x509.pem_managed`` with the same arguments,
    run only when ``rolestack_x509.pem_current`` finds the file not as asked.

    .. code-block:: yaml

        db-certs-ca:
          rolestack_x509.pem_managed:
            - name: /etc/mysql/ssl/ca.pem
            - text: {{ ca_pem | json }}
            - group: mysql
            - mode: '0644'
    """
    kwargs["text"] = text
    return _managed("The PEM file", "pem_current", "x509.pem_managed", name, kwargs, kwargs)


def private_key_managed(name, **kwargs):
    """
    A private key at ``name``: ``x509.private_key_managed`` with the same arguments, run only when
    ``rolestack_x509.private_key_current`` finds the key not as asked.

    .. code-block:: yaml

        db-certs-server-key:
          rolestack_x509.private_key_managed:
            - name: /etc/mysql/ssl/server.key
            - algo: rsa
            - keysize: 2048
            - group: mysql
            - mode: '0640'
    """
    return _managed("The private key", "private_key_current", "x509.private_key_managed", name, kwargs, kwargs)


def certificate_managed(name, days_remaining, signing_policy=None, signing_policy_contents=None, **kwargs):
    """
    A certificate at ``name``: ``x509.certificate_managed`` with the same arguments, run only when
    ``rolestack_x509.certificate_current`` finds it not as asked. ``signing_policy_contents`` is the CA's policy
    ``signing_policy`` as the CA would send it (for the check only: the CA applies its own); with ``ca_server``, a
    CA that does not answer is asked again, up to three times.

    .. code-block:: yaml

        db-certs-server-cert:
          rolestack_x509.certificate_managed:
            - name: /etc/mysql/ssl/server.pem
            - ca_server: salt
            - signing_policy: db2-server
            - signing_policy_contents: {"CN": "db2.production.wpdn", ...}
            - private_key: /etc/mysql/ssl/server.key
            - CN: db2.production.wpdn
            - days_remaining: 30
    """
    kwargs["days_remaining"] = days_remaining
    check_args = dict(kwargs, signing_policy_contents=signing_policy_contents)
    state_args = dict(kwargs, signing_policy=signing_policy) if signing_policy else kwargs
    attempts = CA_ATTEMPTS if kwargs.get("ca_server") else 1
    return _managed("The certificate", "certificate_current", "x509.certificate_managed", name, check_args,
                    state_args, attempts)  # fmt: skip


def _managed(what, check, fun, name, check_args, state_args, attempts=1):
    """Nothing to do when the check says so; else x509_v2's state ``fun`` decides (asked up to ``attempts`` times
    while its CA does not answer), and the check runs again after a change."""
    check = f"rolestack_x509.{check}"
    if _current(check, name, check_args):
        return {
            "name": name,
            "changes": {},
            "result": True,
            "comment": f"{what} is in the correct state (checked on this minion)",
        }
    ret = _run_x509(fun, name, state_args, attempts)
    if ret["result"] and ret["changes"] and not __opts__["test"] and not _current(check, name, check_args):
        # x509_v2 and the check disagree (say, the CA applied an older policy than the pillar's): the next run
        # runs x509_v2 again, which then decides alone
        log.warning("rolestack_x509: %s: changed by %s, yet %s still finds a difference", name, fun, check)
        ret["comment"] += f"; {check} still finds a difference after the change (the next run asks x509_v2 again)"
    return ret


def _current(check, name, check_args):
    """The check's verdict; one it could not reach (an error it did not foresee) leaves the decision to x509_v2."""
    try:
        return __salt__[check](name, **check_args)
    except Exception:  # pylint: disable=broad-except
        log.error("rolestack_x509: %s of %s failed, x509_v2 decides", check, name, exc_info=True)
        return False


def _run_x509(fun, name, state_args, attempts):
    failure = None
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            time.sleep(CA_PAUSE_S)
        try:
            ret = __states__[fun](name, **state_args)
        except Exception as err:  # pylint: disable=broad-except
            # a state comment is one line for the operator, never a traceback: the traceback goes to the log
            log.error("rolestack_x509: %s of %s, attempt %d of %d", fun, name, attempt, attempts, exc_info=True)
            failure = f"{type(err).__name__}: {err}"
            continue
        if ret["result"] is not False or CA_UNANSWERED not in (ret.get("comment") or ""):
            return ret
        failure = ret["comment"]
    comment = f"{fun} failed: {failure}. The minion log has the details"
    if attempts > 1:
        comment = (f"{fun} failed, the CA {state_args['ca_server']} asked {attempts} times: {failure}. The minion log "
                   "has the details; apply the state again once the master relays requests to the CA")  # fmt: skip
    return {"name": name, "changes": {}, "result": False, "comment": comment}
