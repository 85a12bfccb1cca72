"""
Flush an object-cache cluster of a rolestack platform as one, from the salt master (docs/roles/sessions.md,
"Flush a cluster"): every member of ``<role>`` cluster ``<cluster>`` (the minions whose pillar says so, targeted
``I@rolestack:<role>:cluster:<cluster>``) empties its servers of that role with ``rolestack_kv.flush``. The
sessions role is never flushed: a flush would log every user out (the reason the caches are separate clusters).

The decisions (the target, the refusals, the verdict) are ``_utils/rolestack_kv.py``'s ``flush_plan`` and
``flush_summary``; this runner asks the minions.
"""

import logging

import salt.client
from salt.exceptions import CommandExecutionError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_kv as kv
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "cache"

FLUSH_TIMEOUT = 30
GATHER_JOB_TIMEOUT = 5


def __virtual__():
    if __opts__.get("__role") != "master":
        return (False, "cache: a master runner (salt-run cache.<function>)")
    if MISSING_UTIL:
        return (
            False,
            f"cache: the util {MISSING_UTIL} is missing (salt-run saltutil.sync_all, or pip install rolestack)",
        )
    return __virtualname__


def _local_client():
    return salt.client.get_local_client(mopts=__opts__)


def flush(role, cluster, timeout=FLUSH_TIMEOUT):
    """
    Flush every member of one object-cache cluster: ``role`` is ``memcache`` or ``redis`` (``sessions`` is
    refused), ``cluster`` its name in the inventory. Returns ``{"role", "cluster", "target", "flushed": [minion...],
    "failed": {minion: error}, "ok"}``; a member that failed or did not answer (including one another member's
    pillar names) is in ``failed``, and ``ok`` is False.

    CLI Example:

    .. code-block:: bash

        salt-run cache.flush memcache alpha
        salt-run cache.flush redis beta timeout=60
    """
    try:
        plan = kv.flush_plan(role, cluster)
    except kv.KVError as err:
        raise CommandExecutionError(str(err)) from None
    client = _local_client()
    try:
        returns = client.cmd(
            plan["target"],
            "rolestack_kv.flush",
            [],
            tgt_type="compound",
            kwarg={"role": role},
            timeout=timeout,
            full_return=True,
            gather_job_timeout=GATHER_JOB_TIMEOUT,
        )
    finally:
        client.destroy()
    summary = kv.flush_summary(plan, returns or {})
    log.info("cache.flush %s %s: flushed %s, failed %s", role, cluster, summary["flushed"], summary["failed"])
    return summary
