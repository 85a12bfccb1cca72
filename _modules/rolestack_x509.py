"""
Whether an ``x509_v2`` state has anything to do, decided on the minion alone: the ``unless`` checks of the
rolestack certificate states (``states/db/certs.sls``, ``states/salt/ca.sls``).

A no-op run of ``x509.certificate_managed`` with ``ca_server`` asks the CA for its signing policy (a publish
round trip through the master, about half a second) before it finds the certificate fine, and every
``x509_v2`` state runs a ``file.managed`` sub-state and loads its keys with OpenSSL's RSA consistency check
(0.05 s for a 2048-bit key, 0.3 s for the CA's 4096-bit key). These functions make the same comparisons with
salt's own code (``salt.utils.x509.check_cert_changes``, the key type/size/encoding checks of
``x509.private_key_managed``, the text of ``x509.pem_managed``) and the same file owner, group and mode, and
return True only when the state would change nothing. Anything they cannot judge (a link, another file
argument, a key they cannot read) returns False: the state then runs as before and decides.

The CA's policy is known locally: the rolestack ext_pillar derives it for the db host from the inventory, in
``rolestack:db:certs:kinds:<kind>:issued``, from the same data it gives the CA. A key's RSA consistency check runs
once per key content: its digest is then kept in ``<cachedir>/rolestack_x509/checked`` (root only), and the same
bytes are not checked again.
"""

import hashlib
import logging
import os
import stat

import salt.utils.files
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

try:
    import salt.utils.x509 as x509util
    from cryptography.hazmat.primitives import serialization

    HAS_X509 = True
except ImportError:
    HAS_X509 = False

log = logging.getLogger(__name__)

__virtualname__ = "rolestack_x509"

# the default mode x509.private_key_managed gives a key when none is asked
DEFAULT_KEY_MODE = "0400"
# the arguments of x509.certificate_managed that are not certificate fields, with its defaults
CERT_OPTIONS = {
    "encoding": "pem",
    "append_certs": None,
    "digest": "sha256",
    "days_valid": None,
    "not_before": None,
    "not_after": None,
}


def __virtual__():
    if not HAS_X509:
        return (False, "rolestack_x509: salt.utils.x509 and cryptography are needed (as for x509_v2)")
    return __virtualname__


def _own(kwargs):
    """The arguments a state passed, without the ones salt adds to a call (__pub_*)."""
    return {key: value for key, value in kwargs.items() if not key.startswith("__")}


def _file_current(name, file_args):
    """The file exists as a regular file with the owner, group and mode asked (other file arguments: undecided)."""
    if set(file_args) - {"user", "group", "mode", "show_changes"}:  # split_file_kwargs adds show_changes
        return False
    try:
        found = os.lstat(name)
    except OSError:
        return False
    if not stat.S_ISREG(found.st_mode):
        return False  # a link or something else: the state knows what to do with it
    if file_args.get("user") is not None and __salt__["file.user_to_uid"](file_args["user"]) != found.st_uid:
        return False
    if file_args.get("group") is not None and __salt__["file.group_to_gid"](file_args["group"]) != found.st_gid:
        return False
    mode = file_args.get("mode")
    return mode is None or int(salt.utils.files.normalize_mode(mode), 8) == stat.S_IMODE(found.st_mode)


def _checked_marker(data):
    return os.path.join(__opts__["cachedir"], "rolestack_x509", "checked", hashlib.sha256(data).hexdigest())


def _load_private_key(path, passphrase=None):
    """
    ``(key, encoding)`` of a private key file. OpenSSL's RSA consistency check (primality of p and q: the costly
    part of loading a key) runs once per key content on this minion, then the digest of the checked bytes is kept.
    """
    with salt.utils.files.fopen(path, "rb") as handle:
        data = handle.read()
    if not data.lstrip().startswith(b"-----BEGIN"):
        key, encoding, _ = x509util.load_privkey(path, passphrase=passphrase, get_encoding=True)
        return key, encoding
    marker = _checked_marker(data)
    checked = os.path.exists(marker)
    key = serialization.load_pem_private_key(
        data,
        password=passphrase.encode() if isinstance(passphrase, str) else passphrase,
        unsafe_skip_rsa_key_validation=checked,
    )
    if not checked:
        os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
        with salt.utils.files.fopen(marker, "w"):
            pass
    return key, "pem"


def private_key_current(name, algo="rsa", keysize=None, passphrase=None, encoding="pem", new=False, **kwargs):
    """
    True when ``x509.private_key_managed`` with the same arguments would change nothing: the key file exists with
    the owner, group and mode asked (``0400`` when none is), holds a key of ``algo`` and ``keysize`` (rsa: 2048,
    ec: 256 when not given) in ``encoding``, readable with ``passphrase``, and ``new`` is not set.

    CLI Example:

    .. code-block:: bash

        salt '*' rolestack_x509.private_key_current /etc/mysql/ssl/server.key keysize=2048 group=mysql mode=0640
    """
    file_args, extra = x509util.split_file_kwargs(_own(kwargs))
    if extra or new:
        return False
    file_args.setdefault("mode", DEFAULT_KEY_MODE)
    if not _file_current(name, file_args):
        return False
    try:
        key, current_encoding = _load_private_key(name, passphrase)
    except (CommandExecutionError, SaltInvocationError, OSError, TypeError, ValueError) as err:
        log.debug("rolestack_x509: %s: the state decides (%s)", name, err)
        return False
    key_type = x509util.get_key_type(key)
    expected_type = {
        "rsa": x509util.KEY_TYPE.RSA,
        "ec": x509util.KEY_TYPE.EC,
        "ed25519": x509util.KEY_TYPE.ED25519,
        "ed448": x509util.KEY_TYPE.ED448,
    }.get(algo)
    if expected_type is None or key_type != expected_type or current_encoding != encoding:
        return False
    if algo in ("rsa", "ec"):
        return key.key_size == (keysize or {"rsa": 2048, "ec": 256}[algo])
    return True


def certificate_current(name, days_remaining, signing_policy_contents=None, ca_server=None, **kwargs):
    """
    True when ``x509.certificate_managed`` with the same arguments would change nothing, decided without asking
    the CA: the certificate file exists with the owner, group and mode asked, and salt's own comparison
    (``salt.utils.x509.check_cert_changes``) finds no change against ``signing_policy_contents``, the CA's policy
    for it as the CA would send it (``signing_cert``: the CA certificate, here a file on this minion): not within
    ``days_remaining`` days of its end, signed by that CA, for this private key, with the subject, names and
    extensions the policy and the request give. ``ca_server`` is never contacted; set, it says the CA's private
    key is not on this minion.

    The other arguments are those of ``x509.certificate_managed``, with its defaults (``private_key``,
    ``signing_private_key``, ``CN``, ``subjectAltName``, ..., ``encoding``, ``digest``, ``user``, ``group``, ``mode``).

    CLI Example:

    .. code-block:: bash

        salt '*' rolestack_x509.certificate_current /etc/mysql/ssl/server.pem days_remaining=30 \\
            private_key=/etc/mysql/ssl/server.key ca_server=salt \\
            signing_policy_contents='{"signing_cert": "/etc/mysql/ssl/ca.pem", "CN": "db2.example.net"}'
    """
    kwargs = _own(kwargs)
    options = {key: kwargs.pop(key, default) for key, default in CERT_OPTIONS.items()}
    if options["days_valid"] is None and options["not_after"] is None:
        options["days_valid"] = 365  # x509.certificate_managed's default: builds the comparison, never compared
    file_args, cert_args = x509util.split_file_kwargs(x509util.ensure_cert_kwargs_compat(kwargs))
    if not _file_current(name, file_args):
        return False
    try:
        for key in ("private_key", "signing_private_key"):
            if cert_args.get(key):
                cert_args[key], _ = _load_private_key(cert_args[key], cert_args.get(f"{key}_passphrase"))
        _, changes, replace, _ = x509util.check_cert_changes(
            name,
            days_remaining=days_remaining,
            ca_server=ca_server,
            signing_policy_contents=dict(signing_policy_contents or {}),
            **dict(options, append_certs=options["append_certs"] or []),
            **cert_args,
        )
    except (CommandExecutionError, SaltInvocationError, OSError, TypeError, ValueError) as err:
        log.debug("rolestack_x509: %s: the state decides (%s)", name, err)
        return False
    if changes or replace:
        log.debug("rolestack_x509: %s: %s", name, changes or "replace")
        return False
    return True


def pem_current(name, text, **kwargs):
    """
    True when ``x509.pem_managed`` with the same arguments would change nothing: the file holds exactly the PEM
    entry of ``text`` and has the owner, group and mode asked.

    CLI Example:

    .. code-block:: bash

        salt '*' rolestack_x509.pem_current /etc/mysql/ssl/ca.pem text="$(cat ca.crt)" group=mysql mode=0644
    """
    file_args, extra = x509util.split_file_kwargs(_own(kwargs))
    if extra or not _file_current(name, file_args):
        return False
    try:
        wanted = __salt__["x509.get_pem_entry"](text=text)
        with salt.utils.files.fopen(name, "rb") as handle:
            found = handle.read()
    except (CommandExecutionError, SaltInvocationError, OSError) as err:
        log.debug("rolestack_x509: %s: the state decides (%s)", name, err)
        return False
    wanted = wanted if isinstance(wanted, bytes) else wanted.encode()
    # file.managed ends the contents with a newline
    return found == (wanted if wanted.endswith(b"\n") else wanted + b"\n")
