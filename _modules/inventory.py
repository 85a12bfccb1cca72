"""
Inspect and validate the rolestack inventory (the platform's single source of truth).

The logic lives in ``_utils/rolestack_inventory.py``; this module is its command-line face:
validate an inventory before committing it, and show what a host would be given.
"""

import os

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_inventory as logic
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

__virtualname__ = "inventory"


def __virtual__():
    if MISSING_UTIL:
        return (False, f"inventory: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install rolestack)")
    return __virtualname__


def _load(path=None, text=None):
    if (path is None) == (text is None):
        raise SaltInvocationError("give exactly one of path or text")
    if path is not None:
        path = os.path.expanduser(path)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as err:
            raise CommandExecutionError(f"cannot read inventory {path}: {err}") from err
    invalid = logic.InventoryError
    try:
        return logic.load_yaml(text, path or "<text>"), path or "<text>"
    except invalid as err:
        raise CommandExecutionError(str(err)) from err


def validate(path=None, text=None):
    """
    Validate an inventory file (or YAML text). Returns True when it is valid; otherwise raises with
    every error, each naming the key path, the bad value and what was expected.

    CLI Example:

    .. code-block:: bash

        salt-call --local inventory.validate path=/srv/pillar/inventory.yaml

    path
        The inventory YAML file (its top, or its ``rolestack:inventory`` key, holds the inventory).

    text
        The inventory as YAML text, instead of path.
    """
    inventory, source = _load(path, text)
    errors = logic.validate(inventory)
    if errors:
        raise CommandExecutionError(str(logic.InventoryError(errors, source)))
    return True


def roles_from_name(name):
    """
    The roles (and cluster) a host name gives when the inventory sets no roles for it.

    CLI Example:

    .. code-block:: bash

        salt-call --local inventory.roles_from_name db1-masterdb

    name
        A host name such as ``db1-masterdb`` or ``memcache-alpha1``.
    """
    roles, cluster, error = logic.roles_from_name(name)
    if error:
        raise SaltInvocationError(f"{name}: {error}")
    return {"roles": roles, "cluster": cluster}


def host_pillar(host, path=None, text=None):
    """
    The ``rolestack`` pillar the ext_pillar derives for one host of an inventory, without a master.
    Addresses missing from the inventory are shown as pending (the mine is not consulted).

    CLI Example:

    .. code-block:: bash

        salt-call --local inventory.host_pillar db2 path=/srv/pillar/inventory.yaml

    host
        The host name to show, which is also its minion id; any other name gets the common pillar.

    path / text
        The inventory file, or its YAML text.
    """
    inventory, source = _load(path, text)
    invalid = logic.InventoryError
    try:
        derived = logic.derive(inventory)
    except invalid as err:
        raise CommandExecutionError(str(invalid(err.errors, source))) from err
    return logic.pillar_for(derived, host)


def master_acl(path=None, text=None):
    """
    The salt master's ``peer`` and ``peer_run`` settings derived from an inventory (least privilege: db hosts
    may ask the salt host to sign and the other db hosts for a backup stream; no minion may run a runner), as
    ``rolestack-inventory master-acl`` prints them. The bootstrap (states/bootstrap/master.sls) writes them into
    the master's configuration.

    CLI Example:

    .. code-block:: bash

        salt-call --local inventory.master_acl path=/srv/pillar/current/inventory.yaml

    path / text
        The inventory file, or its YAML text.
    """
    inventory, source = _load(path, text)
    invalid = logic.InventoryError
    try:
        return logic.master_acl(inventory)
    except invalid as err:
        raise CommandExecutionError(str(invalid(err.errors, source))) from err
