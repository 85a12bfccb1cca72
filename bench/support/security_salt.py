"""
The hostile battery's checks of the salt host's services (issue 12): the rsync source refuses a host the
inventory does not allow (even with the module's secret) and an allowed host with a wrong secret.
``security_checks.CHECKS`` lists them with the others; same contract: ``check(target) -> (ok, detail)``, every
connection made from inside a lab host to a lab address.
"""

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


CHECKS = {
    "rsync_refuses_hosts_not_allowed_and_wrong_secrets": check_rsync_refuses_hosts_not_allowed_and_wrong_secrets,
}
