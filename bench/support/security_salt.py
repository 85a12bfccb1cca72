"""
The hostile battery's checks of the salt host's services (issue 12): the rsync source refuses a host the
inventory does not allow (even with the module's secret) and an allowed host with a wrong secret; the master's
pillar repository refuses a push whose inventory does not validate.
``security_checks.CHECKS`` lists them with the others; same contract: ``check(target) -> (ok, detail)``, every
connection made from inside a lab host to a lab address.
"""

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
import rolestack_lab  # noqa: E402

WEB_ROLES = ("app", "frontend", "jobrunner")


def _pull(lab, host, module, password):
    """rsync from ``host`` to the salt host's ``module`` with ``password``: (exit code, output)."""
    address = lab.hosts[lab.salt_host]["address"]
    proc = rolestack_lab.in_host(lab, host, "env", f"RSYNC_PASSWORD={password}", "rsync", "--list-only",
                                 "--timeout=20", f"rsync://{module}@{address}/{module}/", check=False,
                                 timeout=60)  # fmt: skip
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def check_rsync_refuses_hosts_not_allowed_and_wrong_secrets(target):
    """
    For every rsync module of the inventory: a lab host without one of its roles is refused with the right secret,
    a host with one of them is refused with a wrong secret and served with the right one (the control).
    """
    lab = getattr(target, "lab", target)
    inventory = yaml.safe_load((lab.pillar_repo / "inventory.yaml").read_text())
    modules = ((inventory.get("rsync") or {}).get("modules")) or {}
    secrets = (inventory.get("secrets") or {}).get("rsync_modules") or {}
    if not modules:
        return False, "the lab's inventory declares no rsync module: nothing proven"
    problems, tried = [], 0
    for module, spec in modules.items():
        roles = set(spec.get("roles") or ())
        hosts = sorted(host for host in lab.hosts if host != lab.salt_host)
        allowed = [host for host in hosts if set(lab.hosts[host]["roles"]) & roles]
        others = [host for host in hosts if host not in allowed]
        if not allowed or not others:
            problems.append(f"{module}: the lab needs a host allowed and one not allowed")
            continue
        code, out = _pull(lab, others[0], module, secrets[module])
        tried += 1
        if code == 0:
            problems.append(f"{module} served {others[0]} (roles {sorted(lab.hosts[others[0]]['roles'])})")
        code, out = _pull(lab, allowed[0], module, secrets[module] + "-wrong")
        if code == 0:
            problems.append(f"{module} served {allowed[0]} with a wrong secret")
        code, out = _pull(lab, allowed[0], module, secrets[module])
        if code != 0:
            problems.append(f"{module} refused {allowed[0]} with its secret: nothing proven ({out[-200:]})")
    return not problems, "; ".join(problems) or f"{tried} module(s): refused to hosts not allowed and wrong secrets"


BAD_ADDRESS = "192.0.2.1"  # TEST-NET-1: outside every lab network


def _git(lab, *args):
    cmd = ["git", "-C", str(lab.pillar_repo), "-c", "user.name=security battery",
           "-c", "user.email=security@rolestack.invalid", *args]  # fmt: skip
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _master_pillar(lab):
    """(tip of main of /srv/git/pillar.git, the release /srv/pillar/current points to) on the salt host."""
    tip = rolestack_lab.in_host(lab, lab.salt_host, "git", "--git-dir=/srv/git/pillar.git", "rev-parse", "main")
    served = rolestack_lab.in_host(lab, lab.salt_host, "readlink", "/srv/pillar/current")
    return tip.stdout.strip(), served.stdout.strip()


def check_invalid_pillar_push_is_refused(target):
    """
    A commit moving a host's address out of the inventory's network, pushed to the master's pillar repository (inside
    the salt host, as an operator's push arrives): refused with the validator's message (the key path, the bad
    value), the master's branch and served tree unchanged. A push that got through is reverted at once.
    """
    lab = getattr(target, "lab", target)
    rolestack_lab.pull_pillar(lab)
    path = lab.pillar_repo / "inventory.yaml"
    inventory = yaml.safe_load(path.read_text())
    host = next(name for name in inventory["hosts"] if name != lab.salt_host)
    inventory["hosts"][host] = {**(inventory["hosts"][host] or {}), "address": BAD_ADDRESS}
    before = _master_pillar(lab)
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    _git(lab, "commit", "-q", "-am", f"security battery: {host} outside the network")
    problems = []
    proc = rolestack_lab.push_pillar(lab)
    try:
        if proc.returncode == 0:
            problems.append(f"the push moving {host} to {BAD_ADDRESS} was accepted")
        else:
            missing = [word for word in (f"hosts.{host}.address", BAD_ADDRESS) if word not in proc.stderr]
            if missing:
                problems.append(f"the refusal does not name {missing}: {proc.stderr.strip()[-300:]}")
        after = _master_pillar(lab)
        if proc.returncode != 0 and after != before:
            problems.append(f"the master's pillar changed although the push was refused: {before} -> {after}")
    finally:
        if proc.returncode == 0:
            _git(lab, "revert", "--no-edit", "HEAD")
            restored = rolestack_lab.push_pillar(lab)
            if restored.returncode != 0:
                problems.append(f"the revert was refused: {restored.stderr.strip()[-300:]}")
        else:
            _git(lab, "reset", "-q", "--hard", "HEAD~1")
    return not problems, "; ".join(problems) or f"refused, naming hosts.{host}.address and {BAD_ADDRESS}"


CHECKS = {
    "rsync_refuses_hosts_not_allowed_and_wrong_secrets": check_rsync_refuses_hosts_not_allowed_and_wrong_secrets,
    "invalid_pillar_push_is_refused": check_invalid_pillar_push_is_refused,
}
