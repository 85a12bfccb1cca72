"""
The salt host's rsync source, from a client host (docs/roles/salt.md, "rsync modules"): pull a module this host
is allowed to pull.

Which modules this host may pull, the server and the module's secret come from this host's own pillar
(``rolestack:rsync_client``, ``rolestack:secrets:rsync_modules``, read with ``unmask=True``), never from the
caller: a host gets only the secrets of the modules its roles may pull. The daemon on the salt host checks the
same thing again (``hosts allow`` of the module, its user and secret). The logic lives in
``_utils/rolestack_rsync.py``.
"""

import os
import shutil

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_inventory as inventory
    import rolestack_rsync as logic
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

__virtualname__ = "rolestack_rsync"


def __virtual__():
    if MISSING_UTIL:
        return (False, f"rolestack_rsync: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _rolestack():
    return inventory.minion_pillar(__salt__["pillar.get"])


def modules():
    """
    The rsync modules this host may pull (its ``rolestack:rsync_client``), without secrets.

    CLI Example:

    .. code-block:: bash

        salt app1 rolestack_rsync.modules
    """
    client = _rolestack().get("rsync_client") or {}
    return {name: dict(spec, server=client["server"]) for name, spec in (client.get("modules") or {}).items()}


def pull(module, dest, delete=False, timeout=600):
    """
    Pull the rsync module ``module`` of the salt host into the directory ``dest`` (created if missing), with this
    host's own secret of that module from its pillar. Refused when this host's roles may not pull it (and the
    daemon refuses it too: its ``hosts allow`` lists only the allowed hosts' addresses).

    module
        the module's name (the inventory's ``rsync.modules.<name>``)
    dest
        an absolute directory path on this host
    delete
        also delete files in ``dest`` that the module no longer has (default False)
    timeout
        seconds before the transfer is given up

    Returns ``{"module", "source", "dest", "transferred": [names]}``. Raises CommandExecutionError.

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_rsync.pull files /var/www/shared
        salt app1 rolestack_rsync.pull files /var/www/shared delete=True
    """
    if not isinstance(module, str) or not module:
        raise SaltInvocationError(f"module: got {type(module).__name__}, expected an rsync module's name")
    rolestack = _rolestack()
    minion = __grains__.get("id") or __opts__.get("id")
    client = rolestack.get("rsync_client")
    rsync = shutil.which("rsync")
    try:
        spec = logic.choose_module(client, module, minion)
        secret = ((rolestack.get("secrets") or {}).get(logic.RSYNC_SECRET) or {}).get(module)
        if not secret:
            raise logic.PullError(f"no secret of rsync module {module!r} in this host's pillar (secrets.rsync_modules)")
        if not rsync:
            raise logic.PullError("rsync is not installed on this host")
        argv = logic.pull_command(client, module, dest, delete=bool(delete), rsync=rsync)
        os.makedirs(dest, mode=0o755, exist_ok=True)
        transferred = logic.run_pull(argv, secret, timeout=timeout)
    except logic.PullError as error:
        raise CommandExecutionError(f"rolestack_rsync.pull: {error}") from None
    except OSError as error:
        raise CommandExecutionError(f"rolestack_rsync.pull: {dest}: {error.strerror}") from None
    return {
        "module": module,
        "source": argv[-2],
        "dest": dest,
        "read_only": spec["read_only"],
        "transferred": transferred,
    }
