"""
The NFS share of ElasticSearch snapshots (docs/roles/backup.md, "NFS share"): pure logic, no Salt dunders.

The backup host exports one directory over NFSv4 to the hosts with the ``elastic`` role (the inventory derives
them: ``rolestack:backup:nfs_clients``); each elastic host mounts it and lists it in ElasticSearch's
``path.repo``. The inventory's optional ``backup.nfs`` key chooses the server (``ganesha``, the default: NFSv4
only, in user space, no kernel NFS needed; or ``kernel``: nfs-kernel-server, for hosts whose kernel has nfsd),
the fixed uid/gid of the ``elasticsearch`` account shared by the backup host and the elastic hosts, and the
exported directory.

:func:`validate` (every problem of ``backup.nfs``, each naming the key path, the value's type and what was
expected), :func:`derive` (the backup host's ``rolestack:backup:nfs`` and the elastic hosts'
``rolestack:elastic:nfs``), :func:`render_ganesha` (``/etc/ganesha/ganesha.conf``) and :func:`render_exports`
(the kernel server's exports file; rendered and unit-tested only: no kernel here runs nfsd).

Squashing: ``root_squash`` with the anonymous uid/gid set to the fixed ``elasticsearch`` uid/gid. ElasticSearch
writes as its own uid, which is the same number on every elastic host and on the backup host, so ownership is
the same everywhere (its repository check fails when nodes see different owners). root on an elastic host is
squashed: it cannot act as uid 0 on the backup host (no chown, no root-owned or setuid files in the share), and
what it writes belongs to the ElasticSearch account, which can delete it when it prunes snapshots (root there can
become that account anyway). Other local users of an elastic host keep their own uid and the directory's mode
(0770) refuses them, which ``all_squash`` would not: it would map every local user to the ElasticSearch account.
"""

import ipaddress
import posixpath

from rolestack_backup import ROOT as BACKUP_ROOT
from rolestack_elastic import MOUNT_PATH
from rolestack_inventory_schema import _fmt
from rolestack_inventory_schema import _got
from rolestack_inventory_schema import _key
from rolestack_inventory_schema import _kind
from rolestack_rsync import FORBIDDEN_PATHS
from rolestack_rsync import PATH_RE
from rolestack_rsync import _nested

NFS_KEYS = ("server", "uid", "gid", "path")
SERVERS = ("ganesha", "kernel")
# uid/gid of the elasticsearch account: outside Debian's system range (100-999, given out per host by packages in
# install order, so never the same number everywhere), below the ranges Debian reserves (60000 and up)
ID_RANGE = (1000, 59999)
DEFAULTS = {"server": "ganesha", "uid": 2500, "gid": 2500, "path": "/srv/exports/elasticsearch"}
USER = GROUP = "elasticsearch"  # the account ElasticSearch's package creates (and reuses when it exists)
NFS_PORT = 2049
DIR_MODE = "0770"
# the elastic hosts' side: where the share is mounted, ElasticSearch's configuration holding path.repo
MOUNT_POINT = MOUNT_PATH  # rolestack_elastic's: its snapshot repositories are directories under the mount
MOUNT_OPTS = "rw,hard,noatime,_netdev,proto=tcp,port=2049,sec=sys"
ES_CONFIG = "/etc/elasticsearch/elasticsearch.yml"
GANESHA_CONFIG = "/etc/ganesha/ganesha.conf"
EXPORTS_FILE = "/etc/exports.d/rolestack-elasticsearch.exports"
# per server: Debian packages, service, whether a change is applied by reload (else restart), and the units an
# NFSv4-only ganesha never needs (rpcbind would listen on port 111 on every address: they are masked)
SERVER_SETTINGS = {
    "ganesha": {
        "packages": ["nfs-ganesha", "nfs-ganesha-vfs"],
        "service": "nfs-ganesha",
        "reload": False,
        "config_file": GANESHA_CONFIG,
        "masked": ["rpcbind.service", "rpcbind.socket", "nfs-ganesha-lock.service"],
    },
    "kernel": {
        "packages": ["nfs-kernel-server"],
        "service": "nfs-kernel-server",
        "reload": True,
        "config_file": EXPORTS_FILE,
        "masked": [],
    },
}
HEADER = "# Managed by salt (rolestack, states/backup/nfs.sls): derived from the inventory; edits are overwritten.\n"


def validate(inventory):
    """``backup.nfs`` of an inventory mapping (when ``backup`` is a mapping): the list of every problem."""
    errors = []
    err = errors.append
    backup = inventory.get("backup")
    spec = backup.get("nfs") if isinstance(backup, dict) else None
    if spec is None:
        return errors
    if not isinstance(spec, dict):
        err(f"backup.nfs: got {_kind(spec)}, expected a mapping with keys {', '.join(NFS_KEYS)} (or nothing)")
        return errors
    for key in spec:
        if key not in NFS_KEYS:
            err(
                f"backup.nfs.{_key(key)}: unknown key (value: {_kind(spec[key])}), expected one of {', '.join(NFS_KEYS)}"
            )
    if "server" in spec and spec["server"] not in SERVERS:
        err(
            f"backup.nfs.server: got {_got(spec['server'])}, expected one of {', '.join(SERVERS)} (ganesha: NFSv4 in "
            "user space; kernel: nfs-kernel-server, only where the kernel has nfsd)"
        )
    low, high = ID_RANGE
    for key in ("uid", "gid"):
        value = spec.get(key)
        if key in spec and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            err(
                f"backup.nfs.{key}: got {_got(value)}, expected an integer from {low} to {high} (the {key} of the "
                f"{USER} account, the same on the backup host and every elastic host)"
            )
    if "path" in spec:
        _check_path("backup.nfs.path", spec["path"], err)
    return errors


def _check_path(path, value, err):
    if not isinstance(value, str) or not PATH_RE.match(value) or posixpath.normpath(value) != value:
        err(
            f"{path}: got {_got(value)}, expected an absolute, normalized directory path of letters, digits and "
            f"_.@+- such as {DEFAULTS['path']!r}"
        )
        return
    # the system directories, and the backup engine's root: its snapshots are never exported (nor is the export
    # inside it, where the engine's purge of a host directory could remove it)
    forbidden = (*FORBIDDEN_PATHS, BACKUP_ROOT)
    inside = [other for other in forbidden if _nested(value, other) or _nested(other, value)]
    if value == "/" or inside:
        err(f"{path}: got {_fmt(value)}, expected a directory outside {', '.join(forbidden)} (such as under /srv)")


def settings(inventory):
    """``backup.nfs`` of a valid inventory with the defaults filled in."""
    spec = (inventory.get("backup") or {}).get("nfs") or {}
    return {key: spec.get(key, default) for key, default in DEFAULTS.items()}


def derive(inventory, backup_host, elastic_hosts):
    """
    The NFS share's pillar of a valid inventory. ``backup_host``: the backup host's member entry (name, fqdn,
    address) or None; ``elastic_hosts``: the member entries of the elastic hosts that have an address. Returns
    ``{"server": rolestack:backup:nfs, "client": rolestack:elastic:nfs}``; both are None when there is no backup
    host or its address is still pending. Without an elastic host the export allows nobody (a former client is
    removed from the configuration, not left in it).
    """
    if not backup_host or not backup_host.get("address"):
        return {"server": None, "client": None}
    spec = settings(inventory)
    account = {"user": USER, "group": GROUP, "uid": spec["uid"], "gid": spec["gid"]}
    clients = sorted({entry["address"] for entry in elastic_hosts}, key=ipaddress.ip_address)
    server = {
        "server": spec["server"],
        "path": spec["path"],
        "mode": DIR_MODE,
        **account,
        "address": backup_host["address"],
        "port": NFS_PORT,
        "clients": clients,
        **{
            key: list(value) if isinstance(value, list) else value
            for key, value in SERVER_SETTINGS[spec["server"]].items()
        },
    }
    server["config"] = render_exports(server) if spec["server"] == "kernel" else render_ganesha(server)
    client = {
        "backup_host": backup_host["name"],
        # the address, not a name: mounting at boot does not wait for DNS; ganesha's pseudo path is the directory
        # itself, so the device is the same whichever server exports it
        "device": f"{backup_host['address']}:{spec['path']}",
        "fstype": "nfs4",
        "opts": MOUNT_OPTS,
        "mount_point": MOUNT_POINT,
        **account,
        "packages": ["nfs-common"],
        "es_config": ES_CONFIG,
        "path_repo": path_repo_line(MOUNT_POINT),
    }
    return {"server": server, "client": client}


def firewall_service(server):
    """
    The backup host's firewall service of the share (rolestack:firewall:services): port 2049 from the elastic hosts
    only. Beside the export's CLIENT list: ganesha 4.3 ignores ``Bind_addr`` on a host without an IPv6 address
    other than ::1 (its IPv6 socket then listens on every address), the firewall still drops other hosts.
    """
    return {"name": "nfs", "port": server["port"], "allow": [f"{address}/32" for address in server["clients"]]}


def path_repo_line(mount_point):
    """ElasticSearch's ``path.repo`` setting listing the mount point (a YAML flow list: one line)."""
    return f'path.repo: ["{mount_point}"]'


def render_ganesha(server, recovery_root=None, graceless=False):
    """
    ``ganesha.conf`` of the backup host: NFSv4 only (no rpcbind, NLM, RQUOTA or UDP), bound to the host's address,
    one export of ``path`` (its NFSv4 pseudo path is the same path) through FSAL VFS, read-write for the clients
    listed, nothing for anybody else, root squashed to the fixed uid/gid. ``recovery_root`` and ``graceless``: for
    a private instance (tests) only; the service keeps ganesha's defaults (its recovery directory, a grace period).
    """
    nfsv4 = ["    Only_Numeric_Owners = true;"]
    if recovery_root:
        nfsv4 += ["    RecoveryBackend = fs;", f'    RecoveryRoot = "{recovery_root}";']
    if graceless:
        nfsv4.append("    Graceless = true;")
    clients = ", ".join(server["clients"])
    lines = [
        "NFS_CORE_PARAM {",
        "    Protocols = 4;",
        f"    Bind_addr = {server['address']};",
        f"    NFS_Port = {server['port']};",
        "    Enable_NLM = false;",
        "    Enable_RQUOTA = false;",
        "    Enable_UDP = false;",
        "}",
        "NFS_KRB5 {",
        "    Active_krb5 = false;",
        "}",
        "NFSV4 {",
        *nfsv4,
        "}",
        "EXPORT_DEFAULTS {",
        "    Protocols = 4;",
        "    Transports = TCP;",
        "    Access_Type = None;",
        "    Squash = root_squash;",
        "}",
        "EXPORT {",
        "    Export_Id = 1;",
        f'    Path = "{server["path"]}";',
        f'    Pseudo = "{server["path"]}";',
        "    Protocols = 4;",
        "    Transports = TCP;",
        "    SecType = sys;",
        "    Access_Type = None;",
        "    Squash = root_squash;",
        f"    Anonymous_Uid = {server['uid']};",
        f"    Anonymous_Gid = {server['gid']};",
        "    FSAL {",
        "        Name = VFS;",
        "    }",
    ]
    if clients:
        lines += [
            "    CLIENT {",
            f"        Clients = {clients};",
            "        Access_Type = RW;",
            "        Squash = root_squash;",
            "    }",
        ]
    lines.append("}")
    return HEADER + "\n".join(lines) + "\n"


def render_exports(server):
    """
    The kernel server's exports file (``/etc/exports.d/``): the directory, read-write for each client, root
    squashed to the fixed uid/gid, synchronous writes. Not run here (no nfsd in this kernel): unit-tested only.
    """
    if not server["clients"]:  # never a path without a client: it would be exported to every host
        return HEADER + "# no elastic host with an address in the inventory: nothing is exported\n"
    options = f"rw,sync,no_subtree_check,root_squash,anonuid={server['uid']},anongid={server['gid']},sec=sys"
    clients = " ".join(f"{address}({options})" for address in server["clients"])
    return HEADER + f"{server['path']} {clients}\n"
