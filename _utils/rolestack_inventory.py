"""
The rolestack inventory: validation and derivation (pure logic, no Salt dunders). What a valid inventory is, and
its validator, live in ``rolestack_inventory_schema``; this util derives, and re-exports the schema's public names.

The inventory is the single source of truth of a platform: which hosts exist, their roles, addresses and
clusters. Everything else (DNS records, /etc/hosts, proxy pools, replication topology, allow-lists,
backup sources) is derived from it here, in one pass over the hosts, by :func:`derive`.

:func:`validate` returns every problem at once; each message names the key path, the bad value and
what was expected. :func:`derive` refuses an invalid inventory (it never yields a half topology).

This module is loaded by Salt as ``__utils__["rolestack_inventory.*"]`` and imported directly by the
unit tests, the CLI and the bench.
"""

import ipaddress

import rolestack_backup as backup_engine
import rolestack_base as base
import rolestack_dns as zones
import rolestack_elastic as elastic
import rolestack_jumpbox as jumpbox
import rolestack_kv as kv
import rolestack_mariadb_sql as sql
import rolestack_nfs as nfs
import rolestack_rsync as rsync
from rolestack_inventory_schema import CACHE_SETTINGS
from rolestack_inventory_schema import CLUSTER_ROLES
from rolestack_inventory_schema import CORE_ROLE_NAMES
from rolestack_inventory_schema import DB_PORT
from rolestack_inventory_schema import DB_SETTINGS
from rolestack_inventory_schema import DB_USERS_SECRET
from rolestack_inventory_schema import DEFAULT_CHARACTER_SET
from rolestack_inventory_schema import DEFAULT_CLUSTER
from rolestack_inventory_schema import MEMCACHED_PORT
from rolestack_inventory_schema import PROXY_STATS_PORT
from rolestack_inventory_schema import REDIS_PORT
from rolestack_inventory_schema import ROLES
from rolestack_inventory_schema import SECRETS
from rolestack_inventory_schema import SESSIONS_SETTINGS
from rolestack_inventory_schema import WEB_ROLES
from rolestack_inventory_schema import InventoryError
from rolestack_inventory_schema import host_roles
from rolestack_inventory_schema import is_host_address

# re-exported: the CLI, the module and the ext_pillar read an inventory through this util
from rolestack_inventory_schema import load_yaml  # noqa: F401
from rolestack_inventory_schema import roles_from_name  # noqa: F401
from rolestack_inventory_schema import validate as validate_schema
from rolestack_inventory_schema import yaml_error_text  # noqa: F401

# the platform's CA on the salt host (states/salt/ca.sls) and what it signs for db hosts: x509_v2 signing policies,
# one per db host and certificate kind (the ext_pillar gives them to the salt host as the top-level pillar key
# x509_signing_policies). Each names the one minion id allowed to use it (the host's inventory name: x509_v2
# matches a plain id exactly, on the CA itself) and fixes the certificate's CN and subjectAltName, which override
# whatever the request asks: a db host gets certificates for its own names only, and a host that leaves the db
# role has no policy left.
CA_DIR = "/etc/pki/rolestack"
CA_CERT = f"{CA_DIR}/ca.crt"
CA_KEY = f"{CA_DIR}/ca.key"
CA_ISSUED_DIR = f"{CA_DIR}/issued"
# what every db certificate gets, whatever the request asks (the policies fix it)
_ISSUED = {
    "basicConstraints": "critical, CA:false",
    "keyUsage": "critical, digitalSignature, keyEncipherment",
    "subjectKeyIdentifier": "hash",
    "authorityKeyIdentifier": "keyid:always",
    "days_valid": 90,
}
CERT_KINDS = {"server": "serverAuth", "client": "clientAuth"}
# where a db host keeps its CA certificate, keys and certificates (MariaDB's configuration reads them there)
DB_SSL_DIR = "/etc/mysql/ssl"
# renew a db certificate when fewer days are left (states/db/certs.sls; rolestack_certs:days_remaining overrides)
DB_CERT_DAYS_REMAINING = 30


def validate(inventory):
    """Every problem of an inventory: the schema's, then the rsync, backup (and backup.nfs) and elastic keys'."""
    errors = validate_schema(inventory)
    if isinstance(inventory, dict):
        errors += rsync.validate(inventory)
        errors += backup_engine.validate(inventory)  # the backup key (rolestack_backup)
        errors += nfs.validate(inventory)  # backup.nfs (rolestack_nfs)
        errors += elastic.validate(inventory)  # the elastic key (rolestack_elastic)
    return errors


def signing_policy_name(host, kind):
    """The name of the x509_v2 signing policy of one db host's server or client certificate."""
    return f"rolestack_db_{kind}_{host}"


def _db_certs(entry, zone, ca):
    """
    A db host's certificates (its rolestack:db:certs pillar, all states/db/certs.sls renders): the CA (``ca``, the
    salt host's core entry) and, per kind, its policy, its files and ``policy_contents``: the CA's policy as the
    CA sends it to a requester (without the CA's key and paths; its certificate is the copy on the db host), which
    a run compares the certificate on disk with instead of asking the CA. CN and subjectAltName (masterdb also
    answers as masterdb) are the policies' too.
    """
    names = [entry["fqdn"], entry["name"]]
    if "masterdb" in entry["roles"]:
        names += [f"masterdb.{zone}", "masterdb"]  # replicas' MASTER_HOST may be the core name
    subject_alt_names = [f"DNS:{name}" for name in names] + [f"IP:{entry['address']}"]
    ca_file = f"{DB_SSL_DIR}/ca.pem"
    kinds = {
        kind: {
            "policy": signing_policy_name(entry["name"], kind),
            "key": f"{DB_SSL_DIR}/{kind}.key",
            "cert": f"{DB_SSL_DIR}/{kind}.pem",
            "policy_contents": {
                **_ISSUED,
                **{"CN": entry["fqdn"], "subjectAltName": subject_alt_names, "extendedKeyUsage": usage},
                "signing_cert": ca_file,
            },
        }
        for kind, usage in CERT_KINDS.items()
    }
    return {
        "cn": entry["fqdn"],
        "subject_alt_names": subject_alt_names,
        "policies": {kind: spec["policy"] for kind, spec in kinds.items()},
        # the CA: its minion id (the salt host's inventory name) and the mine entry of its certificate
        "ca": {"minion": ca["name"] if ca else None, "mine_path": CA_CERT, "file": ca_file},
        "dir": DB_SSL_DIR,
        "days_remaining": DB_CERT_DAYS_REMAINING,
        "kinds": kinds,
    }


def _signing_policies(db_certs):
    """The CA's x509_signing_policies: for each db host, a server and a client policy usable by that id only."""
    policies = {}
    for host, certs in db_certs.items():
        for spec in certs["kinds"].values():
            contents = spec["policy_contents"]  # the same data, with the CA's own key, certificate and copies
            policies[spec["policy"]] = [
                {"minions": host},
                {"signing_private_key": CA_KEY},
                {"signing_cert": CA_CERT},
                *({key: contents[key]} for key in _ISSUED),
                {"copypath": CA_ISSUED_DIR},
                *({key: contents[key]} for key in ("CN", "subjectAltName", "extendedKeyUsage")),
            ]
    return policies


def mine_host_addresses(inventory, mine_addresses):
    """
    The addresses of the hosts of a valid inventory that have none there, from what they reported in the mine
    (host name -> list of addresses), checked as inventory addresses are: inside the network (others are ignored:
    a host with none inside stays pending), not its network or broadcast address, and unique against the
    inventory's addresses and the other hosts' mine addresses. Returns ``({host: address}, errors)``; each error
    names both hosts of a clash.
    """
    network = ipaddress.ip_network(inventory["network"])
    owners = {}  # address -> (host, where it comes from)
    for name, spec in inventory["hosts"].items():
        if (spec or {}).get("address"):
            owners[ipaddress.ip_address(spec["address"])] = (name, "inventory")
    found, errors = {}, []
    for name, spec in inventory["hosts"].items():
        if (spec or {}).get("address") or not mine_addresses.get(name):
            continue
        inside = []
        for candidate in mine_addresses[name]:
            try:
                parsed = ipaddress.ip_address(candidate)
            except (TypeError, ValueError):
                continue
            if parsed in network:
                inside.append(parsed)
        usable = [address for address in inside if is_host_address(address, network)]
        if not usable:
            if inside:
                errors.append(
                    f"hosts.{name}: its mine address {inside[0]} is the network or broadcast address of {network}, "
                    "expected a host address"
                )
            continue
        address = usable[0]
        if address in owners:
            owner, where = owners[address]
            errors.append(
                f"hosts.{name}: its mine address {address} is already the {where} address of {owner}, "
                "expected unique addresses"
            )
            continue
        owners[address] = (name, "mine")
        found[name] = str(address)
    return found, errors


def missing_addresses(inventory):
    """Hosts of a valid inventory that have no address: theirs must come from the mine."""
    return sorted(host for host, spec in inventory["hosts"].items() if not (spec or {}).get("address"))


def mine_functions(network):
    """
    The minion mine functions rolestack relies on: the addresses inside the platform network, and the public ssh
    host keys (the salt host's known_hosts, rolestack_jumpbox).
    """
    return {"network.ip_addrs": [{"cidr": str(network)}], **jumpbox.HOST_KEYS_MINE}


def collapse(addresses):
    """Addresses as the fewest CIDR blocks (allow-lists stay small as the platform grows)."""
    networks = ipaddress.collapse_addresses(ipaddress.ip_network(address) for address in addresses)
    return [str(network) for network in networks]


def server_id(address):
    """A MariaDB server_id derived from the host address: unique because addresses are, stable across rebuilds."""
    packed = int(ipaddress.ip_address(address))
    return packed & 0xFFFFFFFF or 1


def derive(inventory, mine_addresses=None, published_records=None):
    """
    Derive the per-minion pillar of a valid inventory, in one pass.

    ``mine_addresses`` maps host name -> list of addresses the host reported (mine
    ``network.ip_addrs``); the one inside the inventory network is used for a host without address
    (:func:`mine_host_addresses`). A host whose address is still unknown is listed under ``pending`` and left
    out of records and allow-lists until it reports one.

    Returns ``{"hosts": {name: pillar}, "common": pillar_for_unknown_minions}``; the value of each
    minion is the ``rolestack`` pillar key. Lists shared between hosts are the same objects (no copies).
    ``published_records``: records other roles publish into the forward zone ({name, type, data}, checked by
    rolestack_dns.published_records); none yet (the ext_pillar passes none).
    Raises InventoryError when the inventory is invalid or a mine address is (network or broadcast address,
    another host's address).
    """
    errors = validate(inventory)
    if errors:
        raise InventoryError(errors)
    mine_found, errors = mine_host_addresses(inventory, mine_addresses or {})
    if errors:
        raise InventoryError(errors)
    network = ipaddress.ip_network(inventory["network"])
    level, domain = inventory["level"], inventory["domain"]
    zone = f"{level}.{domain}"
    secrets = inventory.get("secrets") or {}

    hosts, pending = {}, []
    by_role = {role: [] for role in ROLES}
    clusters = {role: {} for role in CLUSTER_ROLES}
    for name, spec in inventory["hosts"].items():
        spec = spec or {}
        roles, name_cluster = host_roles(name, spec)
        address = spec.get("address") or mine_found.get(name)
        cluster = None
        if any(role in CLUSTER_ROLES for role in roles):
            cluster = spec.get("cluster") or name_cluster or DEFAULT_CLUSTER
        entry = {"name": name, "fqdn": f"{name}.{zone}", "address": address, "roles": roles, "cluster": cluster}
        hosts[name] = entry
        if address is None:
            pending.append(name)
            continue
        for role in roles:
            by_role[role].append(entry)
            if role in CLUSTER_ROLES:
                clusters[role].setdefault(cluster, []).append(entry)

    def member(entry):
        return {"name": entry["name"], "fqdn": entry["fqdn"], "address": entry["address"]}

    def first(role):
        return member(by_role[role][0]) if by_role[role] else None

    core = {role: first(role) for role in CORE_ROLE_NAMES}
    all_members = [member(entry) for entry in hosts.values() if entry["address"]]
    relay_clients = collapse(entry["address"] for entry in all_members)
    web_addresses = collapse({entry["address"] for role in WEB_ROLES for entry in by_role[role]})

    platform = {
        "name": inventory.get("name", "platform"),
        "level": level,
        "domain": domain,
        "zone": zone,
        "network": str(network),
    }
    dns = {"servers": [core["salt"]["address"]] if core["salt"] else [], "search": [zone]}
    # /etc/resolv.conf's text (the base role writes it, no template; none while the DNS server's address is unknown)
    dns["resolv_conf"] = base.resolv_conf_text(dns["servers"], dns["search"]) if dns["servers"] else None
    hosts_entries = {role: core[role] for role in CORE_ROLE_NAMES if core[role]}
    mail = {"relay": core["mail"]}
    backup = {"host": core["backup"]}
    common = {
        "platform": platform,
        "dns": dns,
        "hosts_entries": hosts_entries,
        "mail": mail,
        "backup": backup,
        "mine_functions": mine_functions(network),
        "pending": pending,
    }

    core_lines = {}
    for role, entry in core.items():
        if entry:
            names = core_lines.setdefault(entry["address"], [])
            for alias in (entry["fqdn"], entry["name"], f"{role}.{zone}", role):
                if alias not in names:
                    names.append(alias)

    # role-specific pieces, built once and shared by every host that needs them
    cluster_members = {
        role: {name: [member(e) for e in members] for name, members in clusters[role].items()} for role in CLUSTER_ROLES
    }
    sessions_members = [member(entry) for entry in by_role["sessions"]]
    key_value_allow = web_addresses  # clients of sessions/memcache/redis: the web hosts (via their proxy)
    key_value = _key_value(inventory, sessions_members, cluster_members, key_value_allow)
    db_peers = [dict(member(entry), server_id=server_id(entry["address"])) for entry in by_role["db"]]
    db_settings = {key: (inventory.get("db") or {}).get(key, spec[0]) for key, spec in DB_SETTINGS.items()}
    records = _dns_records(hosts, core, inventory.get("aliases") or {}, cluster_members)
    records += _published(published_records)
    reverse = zones.reverse_zone(network, hosts.values())
    salt_host = next(entry for entry in hosts.values() if "salt" in entry["roles"])  # its address may be pending
    rsync_pillar = rsync.derive(inventory, hosts.values(), salt_host)
    databases, db_users = _db_accounts(inventory.get("databases") or {}, by_role)
    db_passwords = secrets.get(DB_USERS_SECRET) or {}
    masterdb_name = f"masterdb.{zone}"  # the core name the zone and /etc/hosts give masterdb (follows a switchover)
    operators = jumpbox.operators_pillar(inventory.get("operators"))  # the jump box (rolestack_jumpbox)
    backup_sources = [member(entry) for entry in hosts.values() if entry["address"] and "backup" not in entry["roles"]]
    db_certs = {entry["name"]: _db_certs(entry, zone, core["salt"]) for entry in by_role["db"]}  # pending: none yet
    nfs_share = nfs.derive(inventory, core["backup"], [member(e) for e in by_role["elastic"]])  # rolestack_nfs
    backup_daemons = _backup_sources(inventory, hosts, core["backup"], secrets)  # each source's daemon

    out = {}
    rulesets = {}  # the firewall's texts, one per distinct list of services (_file_texts)
    for name, entry in hosts.items():
        roles = entry["roles"]
        pillar = dict(common)
        pillar["host"] = {**entry, "level": level}
        pillar["etc_hosts"] = _etc_hosts(core_lines, entry)
        if "salt" in roles:
            pillar["dns_zone"] = _dns_zone(zone, entry, records, reverse)
            # the CA (states/salt/ca.sls): its certificate in the mine, the policies db hosts are signed under
            pillar["mine_functions"] = dict(
                common["mine_functions"], **{"x509.get_pem_entries": [{"glob_path": CA_CERT}]}
            )
            pillar["x509_signing_policies"] = _signing_policies(db_certs)
            pillar["ssh_hosts"] = all_members
            pillar["jumpbox"] = jumpbox.jumpbox_pillar(platform, all_members, core["salt"], operators)
        pillar["ssh"] = jumpbox.ssh_pillar(core["salt"], "salt" in roles, operators)
        if "mail" in roles:
            pillar["mail"] = dict(mail, relay_clients=relay_clients)
        if "backup" in roles:
            pillar["backup"] = dict(backup, sources=backup_sources, nfs_clients=[member(e) for e in by_role["elastic"]])
            pillar["backup"].update(backup_engine.derive(inventory, hosts.values()))  # engine: sources with paths
        if "db" in roles:
            pillar["db"] = {
                "masterdb": core["masterdb"],
                "is_master": "masterdb" in roles,
                "peers": db_peers,
                "server_id": server_id(entry["address"]) if entry["address"] else None,
                "settings": db_settings,
                "databases": databases,
                "users": db_users,
                "certs": db_certs.get(name),
            }
        if "sessions" in roles:
            pillar["sessions"] = key_value["sessions"]
        for role in ("memcache", "redis", "elastic"):
            if role in roles:
                pillar[role] = {
                    "cluster": entry["cluster"],
                    "members": cluster_members[role].get(entry["cluster"], []),
                    "allow": key_value_allow,
                    **key_value["caches"].get(role, {}).get(entry["cluster"], {}),
                }
        if "elastic" in roles:  # the snapshot repository and the scheduled snapshots (rolestack_elastic)
            snapshot_members = [m["name"] for m in cluster_members["elastic"].get(entry["cluster"], [])]
            pillar["elastic"]["snapshots"] = elastic.snapshots_pillar(
                inventory, entry["cluster"], snapshot_members, name
            )
        services = [service for role in KEY_VALUE_ROLES if role in roles for service in key_value["services"][role]]
        ssh_service = jumpbox.firewall_service(pillar["ssh"]["allow_from"])  # sshd: from the salt host only
        if ssh_service:
            services.append(ssh_service)
        if services:
            pillar["firewall"] = {"services": list({service["name"]: service for service in services}.values())}
        if any(role in WEB_ROLES for role in roles):
            pillar["proxy"] = key_value["proxy"]
        granted = {
            secret: secrets[secret]
            for secret, props in SECRETS.items()
            if secret in secrets and any(role in props["roles"] for role in roles)
        }
        # application accounts: db hosts (any of them may become masterdb) get every password; a host with one
        # of a user's roles gets that user's password and where to connect
        client_users = {user: spec for user, spec in db_users.items() if set(spec["roles"]) & set(roles)}
        if client_users:
            pillar["db_client"] = {
                "host": masterdb_name,
                "port": DB_PORT,
                "users": {
                    user: {"databases": sorted(spec["grants"]), "ssl": spec["ssl"]}
                    for user, spec in client_users.items()
                },
            }
        password_users = db_users if "db" in roles else client_users
        if password_users:
            granted[DB_USERS_SECRET] = {user: db_passwords[user] for user in password_users}
        _rsync_pillar(pillar, granted, rsync_pillar, name)
        _nfs_pillar(pillar, nfs_share)
        _backup_source_pillar(pillar, granted, backup_daemons.get(name), core["backup"])
        _file_texts(pillar, rulesets)
        if granted:
            pillar["secrets"] = granted
        out[name] = pillar
    common_unknown = dict(common, host=None, etc_hosts=_etc_hosts(core_lines, {"address": None}))
    _file_texts(common_unknown, rulesets)
    return {"hosts": out, "common": common_unknown}


# the roles whose hosts run key-value servers, and the services (firewall) each runs
KEY_VALUE_ROLES = ("sessions", "memcache", "redis")
SERVICE_PORTS = {"redis": REDIS_PORT, "memcached": MEMCACHED_PORT}
ROLE_SERVICES = {"sessions": ("redis", "memcached"), "memcache": ("memcached",), "redis": ("redis",)}
# pool kind of each cache role, and the secret holding a redis pool's password (its name, never its value)
CACHE_KIND = {"memcache": "memcached", "redis": "redis"}
POOL_AUTH = {("sessions", "redis"): "sessions_redis_password", ("redis", "redis"): "cache_redis_password"}


def _key_value(inventory, sessions_members, cluster_members, allow):
    """
    The pillar of the key-value roles (docs/roles/sessions.md), built once and shared: ``sessions`` (the sessions
    hosts' settings), ``caches`` (per cache role and cluster, the settings a member gets beside cluster, members,
    allow), ``services`` (per role, the firewall's services: name, port, allow) and ``proxy`` (the web hosts'
    twemproxy pools, sorted by port; a pool without a server is left out).
    """
    settings = inventory.get("sessions") or {}
    sessions_settings = {key: settings.get(key, spec[0]) for key, spec in SESSIONS_SETTINGS.items()}
    sessions = {
        "members": sessions_members,
        "allow": allow,
        "redis": {
            "port": REDIS_PORT,
            "maxmemory_mb": sessions_settings["redis_maxmemory_mb"],
            "maxmemory_policy": sessions_settings["redis_maxmemory_policy"],
        },
        "memcached": {"port": MEMCACHED_PORT, "memory_mb": sessions_settings["memcached_memory_mb"]},
    }
    caches = {}
    for role, keys in CACHE_SETTINGS.items():
        for cluster, spec in ((inventory.get("caches") or {}).get(role) or {}).items():
            spec = spec or {}
            values = {key: spec.get(key, default) for key, (default, _what) in keys.items()}
            caches.setdefault(role, {})[cluster] = {"port": SERVICE_PORTS[CACHE_KIND[role]], **values}
    services = {
        role: [{"name": name, "port": SERVICE_PORTS[name], "allow": allow} for name in names]
        for role, names in ROLE_SERVICES.items()
    }

    def servers(members, port):
        return [
            {"name": m["name"], "address": m["address"], "port": port} for m in sorted(members, key=lambda m: m["name"])
        ]

    pools = [
        {
            "name": f"sessions_{kind}",
            "role": "sessions",
            "kind": kind,
            "port": SERVICE_PORTS[kind],
            "servers": servers(sessions_members, SERVICE_PORTS[kind]),
            "auth": POOL_AUTH.get(("sessions", kind)),
        }
        for kind in ("redis", "memcached")
    ]
    for role, clusters in caches.items():
        kind = CACHE_KIND[role]
        for cluster, spec in clusters.items():
            pools.append(
                {
                    "name": f"{role}_{cluster}",
                    "role": role,
                    "kind": kind,
                    "port": spec["proxy_port"],
                    "servers": servers(cluster_members[role].get(cluster, []), SERVICE_PORTS[kind]),
                    "auth": POOL_AUTH.get((role, kind)),
                }
            )
    pools = sorted((pool for pool in pools if pool["servers"]), key=lambda pool: pool["port"])
    # a cache member's pillar: the port its server listens on and its cluster's settings (not the proxy port)
    member_settings = {
        role: {cluster: {k: v for k, v in spec.items() if k != "proxy_port"} for cluster, spec in clusters.items()}
        for role, clusters in caches.items()
    }
    return {
        "sessions": sessions,
        "caches": member_settings,
        "services": services,
        "proxy": {"stats_port": PROXY_STATS_PORT, "pools": pools},
    }


def _db_accounts(databases, by_role):
    """
    The databases' settings and one entry per application user: its roles, TLS requirement, privileges per
    database and the addresses of the hosts with one of its roles (an account each; pending hosts have none).
    """
    settings, users = {}, {}
    for database, spec in databases.items():
        spec = spec or {}
        settings[database] = {
            "character_set": spec.get("character_set", DEFAULT_CHARACTER_SET),
            "collate": spec.get("collate"),
        }
        for user, account in (spec.get("users") or {}).items():
            entry = users.setdefault(
                user,
                {
                    "roles": sorted(account["roles"]),
                    "ssl": account.get("ssl", True),
                    "hosts": sorted(
                        {e["address"] for role in account["roles"] for e in by_role[role]}, key=ipaddress.ip_address
                    ),
                    "grants": {},
                },
            )
            entry["grants"][database] = sorted(sql.privilege_name(privilege) for privilege in account["privileges"])
    return settings, users


def _published(records):
    """Records other roles publish into the forward zone (docs/roles/salt.md): checked, or InventoryError."""
    try:
        return zones.published_records(records)
    except ValueError as error:
        raise InventoryError([str(error)]) from None


def _rsync_pillar(pillar, granted, derived, name):
    """The rsync source (rolestack_rsync.derive): the salt host's server, an allowed host's client and secrets."""
    if derived["server"] and "salt" in pillar["host"]["roles"]:
        pillar["rsync_server"] = derived["server"]
    if name in derived["clients"]:
        pillar["rsync_client"] = derived["clients"][name]
    if derived["secrets"].get(name):
        granted[rsync.RSYNC_SECRET] = derived["secrets"][name]


def _nfs_pillar(pillar, share):
    """The NFS share of ElasticSearch snapshots (rolestack_nfs.derive): rolestack:backup:nfs, rolestack:elastic:nfs."""
    roles = pillar["host"]["roles"]
    if "backup" in roles:  # every host has rolestack:backup (its host); the backup host gets the export
        pillar["backup"] = dict(pillar["backup"], nfs=share["server"])
        if share["server"]:  # port 2049 from the elastic hosts only (a new list: the others are shared)
            services = (pillar.get("firewall") or {}).get("services", [])
            pillar["firewall"] = {"services": [*services, nfs.firewall_service(share["server"])]}
    if "elastic" in roles:
        pillar["elastic"]["nfs"] = share["client"]


# a source's own derived secret, in its pillar's secrets (only that host gets it: the secrets file's text)
BACKUP_SOURCE_SECRET = "rsync_backup_source"


def _backup_sources(inventory, hosts, backup_host, secrets):
    """Per source host (rolestack_backup.derive's sources), its daemon's pillar; none without a backup address."""
    if not backup_host or not secrets.get("rsync_backup_secret"):
        return {}
    derived = backup_engine.derive(inventory, hosts.values())
    secret = secrets["rsync_backup_secret"]
    return {
        source["name"]: backup_engine.source_pillar(derived, source["name"], backup_host["address"], secret)
        for source in derived["sources"]
    }


def _backup_source_pillar(pillar, granted, source, backup_host):
    """
    A backup source (rolestack_backup.source_pillar): ``rolestack:backup:source`` without the secrets file's text,
    which goes to ``secrets.rsync_backup_source``; a host with a firewall admits the daemon's port from the backup
    host only (a new list: the services lists are shared between hosts).
    """
    if not source:
        return
    pillar["backup"] = dict(pillar["backup"], source={k: v for k, v in source.items() if k != "secrets"})
    granted[BACKUP_SOURCE_SECRET] = source["secrets"]
    if pillar.get("firewall"):
        service = backup_engine.firewall_service(backup_host["address"], source["port"])
        pillar["firewall"] = {"services": [*pillar["firewall"]["services"], service]}


def _file_texts(pillar, rulesets):
    """
    The texts the SLS write with ``contents`` (derived once here, so a minion fetches and renders no template):
    ``banner`` (issue_net, motd; the jump box's motd shows its ssh_config), ``ssh:sshd_config`` (a minion the
    inventory does not know gets an ``ssh`` of that text only: sshd unrestricted, no accounts) and
    ``firewall:ruleset`` (a host with a port to guard; ``rulesets`` keeps one text per distinct list of services:
    hosts of the same roles share their allow-lists, hundreds of addresses each in a large fleet).
    ``dns:resolv_conf`` is in the common part (derive).
    """
    pillar["banner"] = base.banners(pillar["platform"], pillar["host"], (pillar.get("jumpbox") or {}).get("ssh_config"))
    ssh = pillar.setdefault("ssh", {})
    ssh["sshd_config"] = jumpbox.sshd_config_text(ssh.get("allow_users"), ssh.get("jump_host"))
    firewall = pillar.get("firewall")
    if firewall:
        key = tuple((service["name"], service["port"], tuple(service["allow"])) for service in firewall["services"])
        if key not in rulesets:
            rulesets[key] = kv.nft_ruleset(firewall["services"])
        firewall["ruleset"] = rulesets[key]


def _etc_hosts(core_lines, entry):
    """/etc/hosts lines ([address, names...]) of one host: itself and the core hosts."""
    lines = {address: list(names) for address, names in core_lines.items()}
    if entry["address"]:
        names = lines.setdefault(entry["address"], [])
        for alias in (entry["fqdn"], entry["name"]):
            if alias not in names:
                names.append(alias)
    return [
        [address, *names] for address, names in sorted(lines.items(), key=lambda item: ipaddress.ip_address(item[0]))
    ]


def _dns_zone(zone, server, records, reverse):
    """
    The salt host's ``rolestack:dns_zone``: the zone's and the reverse zone's records and, once ``server`` (the
    salt host's entry) has an address, the files gdnsd reads (``text``, ``reverse.text``, ``config``: it listens
    on that address and loopback), written by states/salt/dns.sls as they are.
    """
    out = {"zone": zone, "records": records, "reverse": dict(reverse)}
    if server["address"]:
        out["text"] = zones.zone_text(zone, server["fqdn"], records)
        out["reverse"]["text"] = zones.zone_text(reverse["zone"], server["fqdn"], reverse["records"], zone)
        out["config"] = zones.config_text(zone, list(dict.fromkeys([server["address"], "127.0.0.1"])))
    return out


def _dns_records(hosts, core, aliases, cluster_members):
    """A records of the internal zone: one per host, one per core role name, round-robin aliases and clusters."""
    records = []
    for entry in hosts.values():
        if entry["address"]:
            records.append({"name": entry["name"], "type": "A", "data": entry["address"]})
    for role, entry in core.items():
        if entry and role not in hosts:
            records.append({"name": role, "type": "A", "data": entry["address"]})
    for alias, targets in sorted(aliases.items()):
        for target in [targets] if isinstance(targets, str) else targets:
            if hosts[target]["address"]:
                records.append({"name": alias, "type": "A", "data": hosts[target]["address"]})
    for role, by_cluster in sorted(cluster_members.items()):
        for cluster, members in sorted(by_cluster.items()):
            for entry in members:
                records.append({"name": f"{role}-{cluster}", "type": "A", "data": entry["address"]})
    return records


def pillar_for(derived, minion_id, zone=None):  # pylint: disable=unused-argument
    """
    The derived pillar of one minion. A host's one minion id is its inventory host name: any other id, an FQDN
    such as ``db2.<zone>`` included, gets the common pillar (no secrets, no role data). ``zone`` is ignored
    (callers of the former FQDN lookup pass it).
    """
    return derived["hosts"].get(minion_id, derived["common"])


# what each peer call is for: db hosts ask the CA (the salt host's minion) to sign their certificates (x509_v2
# remote signing); a new replica asks a db host (masterdb) for one backup stream. No minion runs runners
# (``peer_run`` empty): the signing policies name exact minion ids, which the CA matches itself.
PEER_SIGN = "x509.sign_remote_certificate"
PEER_STREAM = "mariadb_replication.serve_backup_stream"


def exact_pattern(text):
    """
    A regular expression matching exactly ``text``: Salt matches peer keys (minion ids) and function names with
    ``re.match``, a prefix match, so ``salt`` alone would also let ``salt2`` in; ``.`` matches any character and
    ``$`` also matches before a final newline, hence escaped dots and ``\\Z``.
    """
    return "^" + "".join(char if char.isalnum() or char in "_-" else "\\" + char for char in text) + "\\Z"


def master_acl(inventory):
    """
    The salt master's ``peer`` and ``peer_run`` settings for a valid inventory, least privilege: each db host may
    publish the signing request to the salt host only and the backup stream request to the other db hosts only
    (per-target entries ``{"L@<ids>": [function]}``, Salt's ``auth_check``); no minion may run a runner
    (``peer_run`` is empty, and written so: it replaces any default). Minion ids are the inventory host names.
    Raises InventoryError.
    """
    errors = validate(inventory)
    if errors:
        raise InventoryError(errors)
    roles = {name: host_roles(name, spec)[0] for name, spec in inventory["hosts"].items()}
    (salt_host,) = [name for name, host in roles.items() if "salt" in host]
    db_hosts = sorted(name for name, host in roles.items() if "db" in host)
    peer = {}
    for host in db_hosts:
        rights = [{f"L@{salt_host}": [exact_pattern(PEER_SIGN)]}]
        sources = [other for other in db_hosts if other != host]
        if sources:
            rights.append({"L@" + ",".join(sources): [exact_pattern(PEER_STREAM)]})
        peer[exact_pattern(host)] = rights
    return {"peer": peer, "peer_run": {}}


def salt_host(inventory):
    """
    The name (so the minion id) of the inventory's one host with role salt: the master's own minion, for the
    bootstrap (bootstrap/master.sh). Raises InventoryError when the inventory is invalid.
    """
    errors = validate(inventory)
    if errors:
        raise InventoryError(errors)
    (name,) = [name for name, spec in inventory["hosts"].items() if "salt" in host_roles(name, spec)[0]]
    return name


def minion_pillar(pillar_get):
    """
    This minion's ``rolestack`` pillar (what :func:`pillar_for` derived for it), read unmasked through the loader's
    ``pillar.get`` (salt 3008 masks pillar values by default); the execution modules' one way to read it.
    Raises CommandExecutionError when the minion has none (the ext_pillar is not configured on the master).
    """
    # imported here, not at the top: the rolestack-inventory CLI uses this util without needing salt
    from salt.exceptions import CommandExecutionError

    rolestack = pillar_get("rolestack", {}, unmask=True)
    if not isinstance(rolestack, dict) or not rolestack.get("platform"):
        raise CommandExecutionError("no rolestack pillar: is the rolestack ext_pillar configured on the master?")
    return rolestack
