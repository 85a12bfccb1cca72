"""Synthetic inventories of any size, shaped like a real platform (used by tests and bench/)."""

import ipaddress

SECRETS = {
    "sessions_redis_password": "synthetic-sessions-0123456789",
    "cache_redis_password": "synthetic-cache-redis-0123456789",
    "replication_password": "synthetic-replication-0123456789",
    "db_admin_password": "synthetic-db-admin-0123456789",
    "rsync_backup_secret": "synthetic-rsync-0123456789",
}


def inventory(count, tier_cap=None):
    """
    An inventory of `count` hosts: the core hosts, then db/sessions/memcache/redis/elastic/app in proportion.
    With tier_cap, the non-web tiers stop growing at that many hosts each and the rest are web hosts
    (a fleet that grows by adding web VMs).
    """
    network = ipaddress.ip_network("10.64.0.0/14")
    addresses = network.hosts()
    hosts = {
        "salt": {"address": str(next(addresses))},
        "mail": {"address": str(next(addresses))},
        "backup": {"address": str(next(addresses))},
        "db1-masterdb": {"address": str(next(addresses))},
    }
    # per 100 hosts: 3 db, 4 sessions, 8 memcache (in clusters of 4), 4 redis, 4 elastic, rest web
    pattern = ["db"] * 3 + ["sessions"] * 4 + ["memcache"] * 8 + ["redis"] * 4 + ["elastic"] * 4
    pattern += ["app"] * (100 - len(pattern) - 5) + ["frontend"] * 5
    counters = {}
    clusters = {"memcache": [], "redis": []}
    index = 0
    while len(hosts) < count:
        role = pattern[index % len(pattern)]
        index += 1
        if tier_cap is not None and role not in ("app", "frontend") and counters.get(role, 0) >= tier_cap:
            role = "app"
        counters[role] = counters.get(role, 0) + 1
        number = counters[role] + (1 if role == "db" else 0)
        spec = {"address": str(next(addresses))}
        if role in ("memcache", "redis", "elastic"):
            name = f"{role}-g{(number - 1) // 4}x{number}"
            cluster = f"g{(number - 1) // 4}x"  # what the name gives (roles_from_name)
            if role in clusters and cluster not in clusters[role]:
                clusters[role].append(cluster)
        else:
            name = f"{role}{number}"
        hosts[name] = spec
    return {
        "name": "synthetic",
        "level": "staging",
        "domain": "example.net",
        "network": str(network),
        "hosts": hosts,
        # each cache cluster's proxy port on the web hosts: memcache from 20000, redis from 40000
        "caches": {
            role: {cluster: {"proxy_port": base + index} for index, cluster in enumerate(clusters[role])}
            for role, base in (("memcache", 20000), ("redis", 40000))
        },
        "secrets": dict(SECRETS),
    }
