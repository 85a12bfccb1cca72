"""
The digest of this minion's synced extension modules (``_utils/rolestack_extmods.py``): the base role compares it
with the master's (``rolestack:extensions_digest``) and runs ``saltutil.sync_*`` only when they differ.
"""

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_extmods as logic
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

__virtualname__ = "rolestack_extmods"


def __virtual__():
    if MISSING_UTIL:
        return (False, f"rolestack_extmods: the util {MISSING_UTIL} is missing (saltutil.sync_utils)")
    return __virtualname__


def local_digest():
    """
    The digest of the modules, states and utils saltutil.sync_* copied to this minion (its extension_modules
    directory), computed as the rolestack ext_pillar computes the master's.

    CLI Example:

    .. code-block:: bash

        salt '*' rolestack_extmods.local_digest
    """
    return logic.digest(logic.local_dirs(__opts__["extension_modules"]))
