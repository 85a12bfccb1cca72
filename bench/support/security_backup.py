"""
The hostile battery's checks of the backup role (issue 13): each source's backup daemon serves its read-only module
to the backup host only (even a host holding that source's own secret is refused), never with a wrong secret; the
backup host's NFS share of ElasticSearch snapshots is refused to every host without the elastic role, and root on an
elastic host is squashed to the elasticsearch account. ``security_checks.CHECKS`` lists them with the others; same
contract: ``check(target) -> (ok, detail)``, every connection made from inside a lab host to a lab address.
"""

import secrets
import shlex
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / "_utils"))
import rolestack_backup  # noqa: E402
import rolestack_lab  # noqa: E402
import rolestack_nfs  # noqa: E402

NFS_TIMEOUT_S = 4  # a dropped connection: libnfs would wait for its own timeout, the check does not


def _inventory(lab):
    return yaml.safe_load((lab.pillar_repo / "inventory.yaml").read_text())


def _backup_host(lab):
    return next((host for host in sorted(lab.hosts) if "backup" in lab.hosts[host]["roles"]), None)


def _list_source(lab, client, source, password):
    """``rsync --list-only`` of ``source``'s backup module from ``client`` with ``password``: (exit code, output)."""
    url = f"rsync://{rolestack_backup.USER}@{lab.hosts[source]['address']}:{rolestack_backup.PORT}/"
    proc = rolestack_lab.in_host(lab, client, "env", f"RSYNC_PASSWORD={password}", "rsync", "--list-only",
                                 "--timeout=20", "--contimeout=10", url + rolestack_backup.MODULE + "/etc/passwd",
                                 check=False, timeout=60)  # fmt: skip
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def check_backup_sources_serve_only_the_backup_host(target):
    """
    For each source (the salt host, which has no firewall, and a web host): another source holding the source's own
    derived secret is refused, the backup host is refused with a wrong secret and served with the right one (the
    control: the module is there and the secret is right).
    """
    lab = getattr(target, "lab", target)
    backup = _backup_host(lab)
    if backup is None:
        return False, "the lab has no backup host: nothing proven"
    master_secret = _inventory(lab)["secrets"]["rsync_backup_secret"]
    sources = [host for host in sorted(lab.hosts) if host != backup]
    web = next((host for host in sources if {"app", "frontend", "jobrunner"} & set(lab.hosts[host]["roles"])), None)
    problems, tried = [], []
    for source in [lab.salt_host, web]:
        if source is None:
            continue
        other = next(host for host in sources if host != source)
        secret = rolestack_backup.host_secret(master_secret, source)
        code, out = _list_source(lab, other, source, secret)
        if code == 0:
            problems.append(f"{source}'s backup module served {other} (with {source}'s own secret)")
        code, out = _list_source(lab, backup, source, secret + "-wrong")
        if code == 0:
            problems.append(f"{source}'s backup module served {backup} with a wrong secret")
        code, out = _list_source(lab, backup, source, secret)
        if code != 0:
            problems.append(f"{source}'s backup module refused {backup} with its secret: nothing proven ({out[-200:]})")
        tried.append(source)
    return not problems, "; ".join(problems) or f"{', '.join(tried)}: served to {backup} only, never a wrong secret"


def _nfs(lab, client, *argv):
    """A libnfs client (nfs-ls, nfs-cp) inside ``client``, bounded by NFS_TIMEOUT_S: (exit code, output)."""
    command = " ".join(shlex.quote(arg) for arg in argv)
    proc = rolestack_lab.in_host(lab, client, "timeout", str(NFS_TIMEOUT_S), "sh", "-c", command,
                                 check=False, timeout=NFS_TIMEOUT_S + 30)  # fmt: skip
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def check_nfs_share_only_for_elastic_hosts(target):
    """
    The backup host's NFS export, listed from a host without the elastic role: refused (the firewall drops it,
    ganesha's client list would refuse it). With an elastic host in the lab: it lists the share (the control), and a
    file it writes as root belongs to the elasticsearch uid/gid on the backup host (root squashed).
    """
    lab = getattr(target, "lab", target)
    backup = _backup_host(lab)
    if backup is None:
        return False, "the lab has no backup host: nothing proven"
    share = rolestack_nfs.settings(_inventory(lab))
    url = f"nfs://{lab.hosts[backup]['address']}{share['path']}/"
    elastic = [host for host in sorted(lab.hosts) if "elastic" in lab.hosts[host]["roles"]]
    other = next(host for host in sorted(lab.hosts) if host not in (backup, *elastic))
    problems = []
    code, out = _nfs(lab, other, "nfs-ls", url + "?version=4")  # NFSv4 only: libnfs would try NFSv3 first
    if code == 0:
        problems.append(f"{backup}'s NFS share listed from {other} (no elastic role): {out[-200:]}")
    if not elastic:
        detail = f"refused to {other}; no elastic host in this lab: root squash not checked here"
        return not problems, "; ".join(problems) or detail
    client, name = elastic[0], f"squash-{secrets.token_hex(4)}"
    code, out = _nfs(
        lab, client, "sh", "-c", f"echo squash > /tmp/{name} && nfs-cp /tmp/{name} '{url}{name}?version=4&uid=0&gid=0'"
    )
    if code != 0:
        problems.append(f"{client} (elastic) could not write to the share as root: nothing proven ({out[-200:]})")
    else:
        path = f"{share['path']}/{name}"
        owner = rolestack_lab.in_host(lab, backup, "stat", "-c", "%u:%g", path, check=False).stdout.strip()
        rolestack_lab.in_host(lab, backup, "rm", "-f", path, check=False)
        if owner != f"{share['uid']}:{share['gid']}":
            problems.append(
                f"root's file from {client} belongs to {owner} on {backup}, not {share['uid']}:{share['gid']}"
            )
    detail = f"refused to {other}; {client}'s root squashed to {share['uid']}:{share['gid']}"
    return not problems, "; ".join(problems) or detail


CHECKS = {
    "backup_sources_serve_only_the_backup_host": check_backup_sources_serve_only_the_backup_host,
    "nfs_share_only_for_elastic_hosts": check_nfs_share_only_for_elastic_hosts,
}
