"""
The key-value servers of a sessions, memcache or redis host (docs/roles/sessions.md): ask the local redis and
memcached, flush a cache host, and the configuration files and firewall the role states install.

Which servers run here, their ports and the redis passwords come from this host's own pillar (``rolestack:host``,
``rolestack:sessions``/``memcache``/``redis``, ``rolestack:secrets``, read with ``unmask=True``), never from the
caller. Every call talks to 127.0.0.1 (the servers listen there and on the private address). The logic and the
clients live in ``_utils/rolestack_kv.py``.
"""

import logging
import os
import shutil
import subprocess
import tempfile

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_inventory as inventory
    import rolestack_kv as kv
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "rolestack_kv"
TIMEOUT = 5  # seconds for each connection and answer


def __virtual__():
    if MISSING_UTIL:
        return (False, f"rolestack_kv: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _rolestack():
    return inventory.minion_pillar(__salt__["pillar.get"])


def _roles(rolestack):
    return list((rolestack.get("host") or {}).get("roles") or [])


def _servers(rolestack, server=None):
    try:
        servers = kv.local_servers(_roles(rolestack), rolestack)
    except kv.KVError as err:
        raise CommandExecutionError(str(err)) from None
    if not servers:
        raise CommandExecutionError(f"this host runs no key-value server (roles: {_roles(rolestack)})")
    if server is not None:
        if server not in servers:
            raise SaltInvocationError(f"server {server!r} is not on this host, expected one of {', '.join(servers)}")
        servers = {server: servers[server]}
    return servers


def _password(rolestack, spec):
    password = (rolestack.get("secrets") or {}).get(spec["secret"])
    if not password:
        raise CommandExecutionError(f"the secret {spec['secret']} is not in this host's pillar")
    return password


def _client(rolestack, spec, timeout):
    if spec["kind"] == "redis":
        return kv.RedisClient(spec["port"], password=_password(rolestack, spec), timeout=timeout)
    return kv.MemcachedClient(spec["port"], timeout=timeout)


def ping(server=None, timeout=TIMEOUT):
    """
    Ask each local key-value server of this host's roles whether it answers (redis: AUTH and PING, memcached:
    version). Returns ``{server: True or the error}``; the call fails (retcode 1) when one does not answer.

    CLI Example:

    .. code-block:: bash

        salt -C 'I@rolestack:host:roles:sessions' rolestack_kv.ping
        salt sessions1 rolestack_kv.ping server=sessions_redis

    server
        One server only: ``sessions_redis``, ``sessions_memcached``, ``memcache_memcached``, ``redis_redis``.
    """
    rolestack = _rolestack()
    result = {}
    for name, spec in _servers(rolestack, server).items():
        try:
            with _client(rolestack, spec, timeout) as client:
                result[name] = client.ping() if spec["kind"] == "redis" else bool(client.version())
        except kv.KVError as err:
            result[name] = str(err)
    if any(value is not True for value in result.values()):
        __context__["retcode"] = 1
    return result


def info(server=None, timeout=TIMEOUT):
    """
    The local servers' own figures: redis ``INFO`` (every field, numbers converted), memcached ``stats``.
    Returns ``{server: {field: value}}``.

    CLI Example:

    .. code-block:: bash

        salt memcache-alpha1 rolestack_kv.info
        salt sessions1 rolestack_kv.info server=sessions_redis

    server
        One server only (as for :py:func:`ping`).
    """
    rolestack = _rolestack()
    result = {}
    for name, spec in _servers(rolestack, server).items():
        try:
            with _client(rolestack, spec, timeout) as client:
                result[name] = client.info() if spec["kind"] == "redis" else client.stats()
        except kv.KVError as err:
            raise CommandExecutionError(f"{name}: {err}") from None
    return result


def flush(role=None, timeout=TIMEOUT):
    """
    Empty the local cache servers of this host (redis ``FLUSHALL``, memcached ``flush_all``): those of its cache
    roles (memcache, redis), or of ``role`` only. Refused on a host with the sessions role (it would log users
    out). Returns ``{"flushed": [server...], "roles", "cluster", "members"}`` (the cluster's members as this host's
    pillar names them: the cache runner checks that every one was flushed). Flush a whole cluster with
    ``salt-run cache.flush <role> <cluster>``.

    CLI Example:

    .. code-block:: bash

        salt memcache-alpha1 rolestack_kv.flush
        salt redis-beta1 rolestack_kv.flush role=redis

    role
        ``memcache`` or ``redis``: only that role's servers (a host may have both).
    """
    rolestack = _rolestack()
    roles = _roles(rolestack)
    try:
        names = kv.flush_targets(roles, kv.local_servers(roles, rolestack), role)
    except kv.KVError as err:
        raise CommandExecutionError(str(err)) from None
    servers = _servers(rolestack)
    flushed = []
    for name in names:
        spec = servers[name]
        try:
            with _client(rolestack, spec, timeout) as client:
                done = client.flushall() if spec["kind"] == "redis" else client.flush_all()
        except kv.KVError as err:
            raise CommandExecutionError(f"{name}: {err} (flushed before it: {flushed or 'none'})") from None
        if not done:
            raise CommandExecutionError(f"{name}: the server did not confirm the flush")
        flushed.append(name)
        log.info("rolestack_kv: flushed %s", name)
    cache_roles = [role] if role else [r for r in kv.CACHE_ROLES if r in roles]
    members = sorted({m["name"] for r in cache_roles for m in (rolestack.get(r) or {}).get("members") or []})
    clusters = sorted({(rolestack.get(r) or {}).get("cluster") for r in cache_roles} - {None})
    return {"flushed": flushed, "roles": cache_roles, "cluster": ",".join(clusters), "members": members}


def _server_inputs(role, kind):
    """What a configuration file of this host's ``<role>_<kind>`` server is made of: pillar, server, settings, listen."""
    rolestack = _rolestack()
    spec = _servers(rolestack, f"{role}_{kind}")[f"{role}_{kind}"]
    settings = rolestack
    for key in kv.ROLE_SERVERS[role][kind]:
        settings = settings[key]
    try:
        listen = kv.listen_addresses((rolestack.get("host") or {}).get("address"))
    except ValueError as err:
        raise CommandExecutionError(str(err)) from None
    return rolestack, spec, settings, listen


def redis_conf(role):
    """
    The redis.conf of this host's ``role`` (sessions or redis) from its pillar: bound to its private address and
    127.0.0.1, protected mode, requirepass, maxmemory and its policy, RDB snapshots for the sessions only. The
    role states render it into /etc/redis/redis.conf (a template calls this at state time).

    CLI Example:

    .. code-block:: bash

        salt sessions1 rolestack_kv.redis_conf sessions
    """
    rolestack, spec, settings, bind = _server_inputs(role, "redis")
    return kv.redis_conf(
        role,
        bind,
        _password(rolestack, spec),
        settings["maxmemory_mb"],
        settings["maxmemory_policy"],
        port=spec["port"],
    )


def memcached_conf(role):
    """
    The /etc/memcached.conf of this host's ``role`` (sessions or memcache) from its pillar: listening on its
    private address and 127.0.0.1 only, TCP only, its memory limit, no SASL.

    CLI Example:

    .. code-block:: bash

        salt memcache-alpha1 rolestack_kv.memcached_conf memcache
    """
    _rolestack_pillar, spec, settings, listen = _server_inputs(role, "memcached")
    return kv.memcached_conf(role, listen, settings["memory_mb"], port=spec["port"])


def firewall_ruleset():
    """
    This host's nftables ruleset (the table ``inet rolestack``), as its pillar ``rolestack:firewall:ruleset`` holds
    it (the ext_pillar derives it with ``rolestack_kv.nft_ruleset`` from ``rolestack:firewall:services``; the
    firewall SLS writes it to /etc/rolestack/firewall.nft): each guarded port (sshd, the key-value ports) admitted
    from loopback and its allow-list, dropped from anyone else.

    CLI Example:

    .. code-block:: bash

        salt sessions1 rolestack_kv.firewall_ruleset
    """
    ruleset = (_rolestack().get("firewall") or {}).get("ruleset")
    if not ruleset:
        raise CommandExecutionError("this host has no rolestack:firewall pillar (no port to guard: the salt host)")
    return ruleset


def _nft():
    path = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
    if not path:
        raise CommandExecutionError("nft is not installed (Debian package nftables)")
    return path


def firewall_check(path=None):
    """
    Check a ruleset with ``nft -c -f`` (nothing is loaded): the file ``path``, or this host's wanted ruleset.
    Returns True; raises with nft's own message when it refuses.

    CLI Example:

    .. code-block:: bash

        salt sessions1 rolestack_kv.firewall_check
        salt sessions1 rolestack_kv.firewall_check path=/etc/rolestack/firewall.nft
    """
    nft = _nft()
    with tempfile.TemporaryDirectory(prefix="rolestack-nft-") as tmp:
        if path is None:
            path = os.path.join(tmp, "firewall.nft")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(firewall_ruleset())
        checked = subprocess.run([nft, "-c", "-f", path], capture_output=True, text=True, check=False)
    if checked.returncode:
        raise CommandExecutionError(f"nft refuses {path}: {(checked.stderr or checked.stdout).strip()[-2000:]}")
    return True


def firewall_load(path=None):
    """
    Load the ruleset ``path`` (default /etc/rolestack/firewall.nft) with ``nft -f``: the file replaces the table
    ``inet rolestack`` as a whole, in one nft transaction. Returns True; raises with nft's own message when it
    refuses (the live table is then left as it was).

    CLI Example:

    .. code-block:: bash

        salt sessions1 rolestack_kv.firewall_load
    """
    path = path or kv.NFT_CONF
    loaded = subprocess.run([_nft(), "-f", path], capture_output=True, text=True, check=False)
    if loaded.returncode:
        raise CommandExecutionError(f"nft refuses {path}: {(loaded.stderr or loaded.stdout).strip()[-2000:]}")
    return True


def firewall_in_sync(path=None):
    """
    Whether the live table ``inet rolestack`` is the one in ``path`` (default /etc/rolestack/firewall.nft): the
    digest in the live table's comment is the file's. False when the file, the table or nft is missing. The
    firewall state loads the file unless this holds, so a second run changes nothing.

    CLI Example:

    .. code-block:: bash

        salt sessions1 rolestack_kv.firewall_in_sync
    """
    path = path or kv.NFT_CONF
    try:
        with open(path, encoding="utf-8") as handle:
            wanted = handle.read()
        nft = _nft()
    except (OSError, CommandExecutionError):
        return False
    family, table = kv.NFT_TABLE
    listed = subprocess.run([nft, "list", "table", family, table], capture_output=True, text=True, check=False)
    return kv.nft_in_sync(wanted, listed.stdout if listed.returncode == 0 else None)
