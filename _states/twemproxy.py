"""
twemproxy (nutcracker) states for rolestack's web hosts, on top of the ``twemproxy`` execution module.

Each state computes what would change first (a unified diff with redis passwords redacted, the mode and owner),
honours ``test=True`` (result None, "would ..."), changes only what differs and checks again afterwards.
``config_managed`` writes the candidate to a temporary file beside the live one, has ``nutcracker -t`` check it,
and only then replaces the live file: an invalid configuration never reaches the running proxy (the state fails,
naming nutcracker's message, and the old file stays).

.. code-block:: yaml

    proxy-config:
      twemproxy.config_managed:
        - name: /etc/nutcracker/nutcracker.yml

    proxy-defaults:
      twemproxy.defaults_managed:
        - name: /etc/default/nutcracker
"""

import contextlib
import grp
import logging
import os
import pwd

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_twemproxy as tw
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "twemproxy"


def __virtual__():
    if "twemproxy.render" not in __salt__:
        return (False, "the twemproxy execution module is not available")
    if MISSING_UTIL:
        return (False, f"twemproxy: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _mode(mode):
    """'0640' (quote it in SLS) or an int already in octal value (0o640)."""
    if isinstance(mode, str):
        try:
            return int(mode, 8)
        except ValueError:
            pass
    elif isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o7777:
        return mode
    raise SaltInvocationError(f"mode: got {mode!r}, expected an octal mode string such as '0640'")


def _planned(name, text, user, group, mode, secrets):
    """What differs between the file and what it should be: the state's changes (no password in them)."""
    old, old_mode, old_user, old_group = tw.file_facts(name)
    changes = {}
    if old != text:
        changes["diff"] = tw.diff(old, text, name) or "(only redis passwords differ)"
        if secrets:
            auth = tw.changed_auth(old, text)
            if auth:
                changes["redis_auth"] = f"changed for pools {', '.join(auth)} (values not shown)"
    if old is not None and old_mode != mode:
        changes["mode"] = {"old": f"{old_mode:04o}", "new": f"{mode:04o}"}
    if old is not None and (old_user, old_group) != (user, group):
        changes["owner"] = {"old": f"{old_user}:{old_group}", "new": f"{user}:{group}"}
    return old, changes


def _managed(name, render, user, group, mode, check, what):
    ret = _ret(name)
    try:
        mode = _mode(mode)
        if not isinstance(name, str) or not os.path.isabs(name):
            raise SaltInvocationError(f"name: got {name!r}, expected an absolute file path")
        text = __salt__[render]()
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        return ret
    old, changes = _planned(name, text, user, group, mode, check)
    if not changes:
        ret["comment"] = f"{what} {name} is already as wanted"
        return ret
    if __opts__["test"]:
        ret.update(result=None, changes=changes)
        ret["comment"] = f"{what} {name} would be {'replaced' if old is not None else 'created'}" + (
            " (after nutcracker -t accepts the new one)" if check and old != text else ""
        )
        return ret
    try:
        if old == text:  # only the mode or owner differ: the content nutcracker runs stays
            os.chown(name, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
            os.chmod(name, mode)
        else:
            candidate = tw.write_candidate(name, text, user, group, mode)
            try:
                if check:
                    verdict = __salt__["twemproxy.validate"](path=candidate)
                    if not verdict["valid"]:
                        ret.update(result=False)
                        ret["comment"] = (
                            f"nutcracker -t refused the new {what} ({verdict['message']}); "
                            f"{name} left as it was, the running proxy untouched"
                        )
                        return ret
                os.replace(candidate, name)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(candidate)
    except (OSError, KeyError, CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=f"cannot write {what} {name}: {err}")
        return ret
    ret["changes"] = changes
    _, left = _planned(name, text, user, group, mode, check)
    if left:
        ret.update(result=False, comment=f"{what} {name} still differs after writing it: {sorted(left)}")
        return ret
    if check and old != text:
        verdict = __salt__["twemproxy.validate"](path=name)
        if not verdict["valid"]:
            ret.update(
                result=False, comment=f"{name} was written but nutcracker -t now refuses it: {verdict['message']}"
            )
            return ret
    ret["comment"] = f"{what} {name} {'replaced' if old is not None else 'created'}" + (
        " (nutcracker -t accepted it first)" if check and old != text else ""
    )
    return ret


def config_managed(name=tw.CONFIG_PATH if not MISSING_UTIL else None, user="root", group="nutcracker", mode="0640"):
    """
    The nutcracker configuration this host's pillar asks for (``twemproxy.render``), validated with
    ``nutcracker -t`` before it replaces ``name``; mode 0640 root:nutcracker (it holds redis passwords). The diff
    in ``changes`` shows every line but the passwords (``redis_auth`` names the pools whose password changed).
    Restart the service on changes (nutcracker has no reload): ``service.running`` with ``watch``.

    .. code-block:: yaml

        proxy-config:
          twemproxy.config_managed:
            - name: /etc/nutcracker/nutcracker.yml
    """
    return _managed(name, "twemproxy.render", user, group, mode, True, "nutcracker configuration")


def defaults_managed(name=tw.DEFAULTS_PATH if not MISSING_UTIL else None, user="root", group="root", mode="0644"):
    """
    Debian's /etc/default/nutcracker (``twemproxy.defaults``): the service's options, our configuration file and
    the stats port on 127.0.0.1 only.

    .. code-block:: yaml

        proxy-defaults:
          twemproxy.defaults_managed:
            - name: /etc/default/nutcracker
    """
    return _managed(name, "twemproxy.defaults", user, group, mode, False, "nutcracker service options")
