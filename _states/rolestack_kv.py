"""
The host firewall of the key-value roles as a state, on top of the ``rolestack_kv`` execution module.

``firewall_loaded`` compares the live table ``inet rolestack`` with the ruleset file first (the digest in the
table's comment, ``rolestack_kv.firewall_in_sync``), honours ``test=True``, loads the file only when they differ
and checks again afterwards. A state of its own rather than ``cmd.run`` with an ``unless`` check: salt 3008 answers
a state's first ``unless`` by loading every state module to look for a ``mod_run_check`` (about 0.75 s of every
highstate of a host with no other such check).

.. code-block:: yaml

    firewall-load:
      rolestack_kv.firewall_loaded:
        - name: /etc/rolestack/firewall.nft
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "rolestack_kv"


def __virtual__():
    if "rolestack_kv.firewall_in_sync" not in __salt__:
        return (False, "rolestack_kv: the rolestack_kv execution module is not loaded (saltutil.sync_all)")
    return __virtualname__


def firewall_loaded(name):
    """
    The live table ``inet rolestack`` is the one in the ruleset file ``name`` (its digest); loaded with ``nft -f``
    when it is not (absent, edited by hand, or the file changed).

    name
        The ruleset file, written and checked (``nft -c -f``) by a file state before this one.

    .. code-block:: yaml

        firewall-load:
          rolestack_kv.firewall_loaded:
            - name: /etc/rolestack/firewall.nft
            - require:
              - file: firewall-ruleset
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    if __salt__["rolestack_kv.firewall_in_sync"](name):
        ret["comment"] = f"the live table is the one in {name}"
        return ret
    if __opts__["test"]:
        ret.update(result=None, changes={"loaded": name}, comment=f"{name} would be loaded (the live table differs)")
        return ret
    try:
        __salt__["rolestack_kv.firewall_load"](name)
    except CommandExecutionError as err:
        ret.update(result=False, comment=str(err))
        return ret
    if not __salt__["rolestack_kv.firewall_in_sync"](name):
        ret.update(result=False, comment=f"{name} was loaded but the live table still differs from it")
        return ret
    ret.update(changes={"loaded": name}, comment=f"{name} loaded")
    return ret
