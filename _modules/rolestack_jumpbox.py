"""
The salt host as the SSH jump box (docs/roles/salt.md, "Jump box"): the known_hosts of every inventory host from the
host keys they publish in the mine (``ssh.host_keys``, the base role's mine functions), and the generated
ssh_config. Reads this host's pillar ``rolestack:jumpbox`` (the salt host's only); the logic lives in
``_utils/rolestack_jumpbox.py``.
"""

import logging

from salt.exceptions import CommandExecutionError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_jumpbox as jumpbox
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "rolestack_jumpbox"


def __virtual__():
    if MISSING_UTIL:
        return (False, f"rolestack_jumpbox: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _jumpbox():
    rolestack = __salt__["pillar.get"]("rolestack", {}, unmask=True)  # salt 3008 masks pillar values by default
    if not isinstance(rolestack, dict) or not rolestack.get("platform"):
        raise CommandExecutionError("no rolestack pillar: is the rolestack ext_pillar configured on the master?")
    box = rolestack.get("jumpbox")
    if not box:
        raise CommandExecutionError("this host has no rolestack:jumpbox pillar (only the host with role salt has)")
    return box


def known_hosts():
    """
    The known_hosts text of every inventory host with an address (``name,fqdn,address TYPE KEY`` per public host
    key it published in the mine); a host that has not published yet gets a comment line. The salt role writes it
    to /etc/ssh/ssh_known_hosts.

    CLI Example:

    .. code-block:: bash

        salt salt rolestack_jumpbox.known_hosts
    """
    box = _jumpbox()
    mine = __salt__["mine.get"]("*", jumpbox.HOST_KEYS_FUNCTION) or {}
    return jumpbox.known_hosts(box.get("hosts") or [], mine)


def ssh_config():
    """
    The ssh_config operators copy to their laptop (every inventory host by name, ProxyJump through the salt host),
    as the inventory derived it.

    CLI Example:

    .. code-block:: bash

        salt salt rolestack_jumpbox.ssh_config
    """
    return _jumpbox()["ssh_config"]
