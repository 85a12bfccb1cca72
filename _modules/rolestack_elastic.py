"""
ElasticSearch's snapshots on an elastic host (docs/roles/elastic.md): the snapshot repository on the backup host's
NFS share, dated snapshots, the list, and the prune by retention.

Every setting comes from this host's pillar ``rolestack:elastic:snapshots`` (derived from the inventory's
``elastic`` key in ``_utils/rolestack_elastic.py``: the repository's name and location, the retention, the URL of
the local node); a keyword overrides it for one call. The HTTP client and the choices (names, retention) live in
the util. Every failure is a CommandExecutionError of one line naming the HTTP status and ElasticSearch's error
type and reason.
"""

import datetime

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_elastic as logic
    import rolestack_inventory as inventory
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

__virtualname__ = "rolestack_elastic"
# a snapshot name ElasticSearch refuses as taken (another client took it meanwhile): the next one is tried
NAME_ATTEMPTS = 5


def __virtual__():
    if MISSING_UTIL:
        return (False, f"rolestack_elastic: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _settings(**overrides):
    """This host's rolestack:elastic:snapshots, with the keywords given (not None) in place of its values."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        rolestack = inventory.minion_pillar(__salt__["pillar.get"])
    except CommandExecutionError:
        rolestack = {}
    spec = dict((rolestack.get("elastic") or {}).get("snapshots") or {}, **given)
    if not spec.get("url") or not spec.get("repository"):
        raise CommandExecutionError(
            "rolestack_elastic: no rolestack:elastic:snapshots in this host's pillar (the elastic role's hosts get it)"
            " and no url and repository given"
        )
    return spec


def _password():
    """The password of rolestack:elastic:snapshots:username, from this host's secrets (never shown)."""
    secrets = inventory.minion_pillar(__salt__["pillar.get"]).get("secrets") or {}
    password = secrets.get(logic.PASSWORD_SECRET)
    if not password:
        raise CommandExecutionError(
            f"rolestack_elastic: no secrets.{logic.PASSWORD_SECRET} in this host's pillar, expected the password of "
            "the inventory's elastic.username"
        )
    return password


def _client(spec):
    auth = (spec["username"], _password()) if spec.get("username") else None
    try:
        return logic.Client(spec["url"], cafile=spec.get("ca_file"), auth=auth)
    except logic.ElasticError as error:
        raise SaltInvocationError(f"rolestack_elastic: {error}") from None


def _fail(function, error):
    return CommandExecutionError(f"rolestack_elastic.{function}: {error}")


def repository(name=None, url=None):
    """
    The snapshot repository as ElasticSearch has it registered (GET /_snapshot/<name>).

    name
        the repository (default: the pillar's rolestack:elastic:snapshots:repository)
    url
        the node (default: the pillar's, http://127.0.0.1:9200)

    Returns ``{"name", "registered": bool, "type", "settings"}`` (settings as ElasticSearch keeps them: strings).

    CLI Example:

    .. code-block:: bash

        salt elastic1 rolestack_elastic.repository
    """
    spec = _settings(repository=name, url=url)
    try:
        found = _client(spec).get_repository(spec["repository"])
    except logic.ElasticError as error:
        raise _fail("repository", error) from None
    found = found or {}
    return {
        "name": spec["repository"],
        "registered": bool(found),
        "type": found.get("type"),
        "settings": found.get("settings") or {},
    }


def repository_changes(name=None, location=None, compress=True, url=None):
    """
    What registering the repository would change (compared with GET /_snapshot/<name>): ``{}`` when it is
    registered as wanted.

    CLI Example:

    .. code-block:: bash

        salt elastic1 rolestack_elastic.repository_changes
    """
    _name, body, found = _wanted_repository(
        "repository_changes", name, location, compress, url, lambda client, repo, body: client.get_repository(repo)
    )
    return logic.repository_changes(found, body)


def register_repository(name=None, location=None, compress=True, url=None):
    """
    Register (or update) the snapshot repository: type ``fs``, ``location`` a directory every node reaches (the
    NFS mount of the backup host's share, listed in path.repo), compressed metadata. ElasticSearch verifies it on
    every node first and refuses a location outside path.repo.

    name
        the repository (default: the pillar's)
    location
        its directory (default: the pillar's, /mnt/elastic-snapshots/<cluster>)
    compress
        compress the metadata files (default True)
    url
        the node (default: the pillar's)

    Returns ``{"name", "body", "acknowledged"}``.

    CLI Example:

    .. code-block:: bash

        salt elastic1 rolestack_elastic.register_repository
    """
    name, body, answer = _wanted_repository("register_repository", name, location, compress, url, _put)
    return {"name": name, "body": body, "acknowledged": bool(answer.get("acknowledged"))}


def _put(client, repository, body):
    return client.put_repository(repository, body)


def _wanted_repository(function, name, location, compress, url, call):
    """(name, body, ``call(client, name, body)``) for the wanted repository; a failure is named after ``function``."""
    spec = _settings(repository=name, location=location, url=url)
    if not spec.get("location"):
        raise SaltInvocationError(f"rolestack_elastic.{function}: location: missing, expected a directory path")
    body = logic.repository_body(spec["location"], compress)
    try:
        return spec["repository"], body, call(_client(spec), spec["repository"], body)
    except logic.ElasticError as error:
        raise _fail(function, error) from None


def _list(client, spec, function):
    try:
        return client.list_snapshots(spec["repository"])
    except logic.ElasticError as error:
        raise _fail(function, error) from None


def snapshots(repository=None, url=None):
    """
    The snapshots of the repository (GET /_snapshot/<repository>/_all), oldest first: name, state, start and end
    time (UTC), indices, failed shards, and ``ours`` (named by rolestack's schedule: only those are pruned).

    CLI Example:

    .. code-block:: bash

        salt elastic1 rolestack_elastic.snapshots
    """
    spec = _settings(repository=repository, url=url)
    found = _list(_client(spec), spec, "snapshots")
    return [logic.summary(snapshot) for snapshot in found]


def snapshot(wait=True, repository=None, url=None):
    """
    Take a snapshot now, named ``rolestack-YYYY.MM.DD-HHMMSS`` in UTC (with ``-1``, ``-2``... when that name is
    taken: never the same name twice; a name ElasticSearch refuses as taken is replaced by the next one).

    wait
        wait for the snapshot to complete (default True; False returns once ElasticSearch accepted it)
    repository, url
        default: the pillar's

    Returns ``{"name", "repository", "state", "accepted"}`` (state: SUCCESS, PARTIAL, FAILED; None when not
    waited for). A snapshot that ends FAILED raises CommandExecutionError.

    CLI Example:

    .. code-block:: bash

        salt elastic1 rolestack_elastic.snapshot
        salt elastic1 rolestack_elastic.snapshot wait=False
    """
    spec = _settings(repository=repository, url=url)
    client = _client(spec)
    taken = {snapshot.get("snapshot") for snapshot in _list(client, spec, "snapshot")}
    for _attempt in range(NAME_ATTEMPTS):
        name = logic.snapshot_name(datetime.datetime.now(datetime.UTC), taken)
        try:
            answer = client.create_snapshot(spec["repository"], name, wait=bool(wait))
        except logic.ElasticError as error:
            if error.error_type == "invalid_snapshot_name_exception" and "already exists" in str(error):
                taken.add(name)
                continue
            raise _fail("snapshot", error) from None
        break
    else:
        raise _fail("snapshot", f"every name tried was taken (last: {name})")
    info = answer.get("snapshot") or {}
    state = info.get("state")
    if state == "FAILED":
        raise _fail("snapshot", f"snapshot {name} ended FAILED: {info.get('reason') or 'no reason given'}")
    return {"name": name, "repository": spec["repository"], "state": state, "accepted": bool(info or answer)}


def prune(keep=None, test=False, repository=None, url=None):
    """
    Delete the platform's snapshots beyond the retention: the ``keep`` newest good (SUCCESS) snapshots stay, and
    so does every snapshot in progress, every failed or partial one newer than the oldest kept, and every snapshot
    rolestack did not name.

    keep
        how many good snapshots to keep (default: the pillar's rolestack:elastic:snapshots:retention)
    test
        only say what would be deleted

    Returns the plan (keep, delete, in_progress, newer_not_good, others) and ``deleted``.

    CLI Example:

    .. code-block:: bash

        salt elastic1 rolestack_elastic.prune
        salt elastic1 rolestack_elastic.prune keep=7 test=True
    """
    spec = _settings(repository=repository, url=url, retention=keep)
    client = _client(spec)
    try:
        plan = logic.retention_plan(_list(client, spec, "prune"), spec.get("retention"))
    except ValueError as error:
        raise SaltInvocationError(f"rolestack_elastic.prune: {error}") from None
    deleted = []
    if not test:
        for name in plan["delete"]:
            try:
                client.delete_snapshot(spec["repository"], name)
            except logic.ElasticError as error:
                raise _fail("prune", f"{error} (deleted before it: {', '.join(deleted) or 'none'})") from None
            deleted.append(name)
    return dict(plan, deleted=deleted, test=bool(test))


def scheduled():
    """
    What the timer runs (rolestack-elastic-snapshot.timer, daily): a dated snapshot, waited for, then the prune
    by the pillar's retention. A snapshot that does not end SUCCESS prunes nothing and fails the run.

    CLI Example:

    .. code-block:: bash

        salt-call rolestack_elastic.scheduled
    """
    taken = snapshot(wait=True)
    if taken["state"] != logic.SUCCESS:
        raise _fail("scheduled", f"snapshot {taken['name']} ended {taken['state']}: nothing pruned")
    return {"snapshot": taken, "prune": prune()}
