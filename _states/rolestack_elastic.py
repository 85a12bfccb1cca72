"""
ElasticSearch's snapshot repository as a state, on top of the ``rolestack_elastic`` execution module
(docs/roles/elastic.md).

``repository_registered`` compares the registered repository (GET /_snapshot/<name>) with the wanted one first,
honours ``test=True`` (result None, the changes it would make, no PUT), registers it only when it differs and
checks again afterwards. Every value defaults to this host's pillar ``rolestack:elastic:snapshots``.

.. code-block:: yaml

    elastic-snapshot-repository:
      rolestack_elastic.repository_registered:
        - name: rolestack_backup
        - location: /mnt/elastic-snapshots/main
"""

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

__virtualname__ = "rolestack_elastic"


def __virtual__():
    if "rolestack_elastic.repository_changes" not in __salt__:
        return (False, "rolestack_elastic: the rolestack_elastic execution module is not loaded (saltutil.sync_all)")
    return __virtualname__


def repository_registered(name, location=None, compress=True, url=None):
    """
    The snapshot repository ``name`` is registered with ElasticSearch as type ``fs`` at ``location`` (compressed
    metadata); registered (PUT /_snapshot/<name>) only when it is missing or differs.

    name
        the repository's name (the pillar's rolestack:elastic:snapshots:repository)
    location
        its directory: the NFS mount of the backup host's share (default: the pillar's)
    compress
        compress the metadata files (default True)
    url
        the node (default: the pillar's, http://127.0.0.1:9200)

    .. code-block:: yaml

        elastic-snapshot-repository:
          rolestack_elastic.repository_registered:
            - name: {{ snapshots.repository }}
            - location: {{ snapshots.location }}
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    args = {"name": name, "location": location, "compress": compress, "url": url}
    try:
        changes = __salt__["rolestack_elastic.repository_changes"](**args)
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        return ret
    if not changes:
        ret["comment"] = f"snapshot repository {name} is registered as wanted"
        return ret
    if __opts__["test"]:
        ret.update(result=None, changes=changes, comment=f"snapshot repository {name} would be registered")
        return ret
    try:
        __salt__["rolestack_elastic.register_repository"](**args)
        left = __salt__["rolestack_elastic.repository_changes"](**args)
    except (CommandExecutionError, SaltInvocationError) as err:
        ret.update(result=False, comment=str(err))
        return ret
    if left:
        ret.update(
            result=False,
            changes=changes,
            comment=f"snapshot repository {name} was registered but still differs: {', '.join(sorted(left))}",
        )
        return ret
    ret.update(changes=changes, comment=f"snapshot repository {name} registered")
    return ret
