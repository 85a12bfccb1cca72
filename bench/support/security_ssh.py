"""
The hostile battery's checks of the jump box (issue 12): sshd on every host but the salt host is reachable only from
the salt host (the host firewall), and admits only connections from it (sshd's AllowUsers), with no password, no
keyboard-interactive and no root login. ``security_checks.CHECKS`` lists them with the others; same contract:
``check(target) -> (ok, detail)``, every connection made from inside a lab host to a lab address.
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import rolestack_lab  # noqa: E402
import security_kv  # noqa: E402

SSH_PORT = 22
HELLO = "SSH-2.0-rolestack-security-probe\r\n"
# what sshd -T (the effective configuration) must say on every host
HARDENED = {"passwordauthentication": "no", "kbdinteractiveauthentication": "no", "permitrootlogin": "no"}


def _dial(lab, source, hosts):
    """[(outcome, first answer)] of a TCP connection to port 22 of each of ``hosts``, made from ``source``."""
    batch = [[lab.hosts[host]["address"], SSH_PORT, HELLO] for host in hosts]
    proc = rolestack_lab.in_host(lab, source, "python3", "-c", security_kv.DIAL, str(security_kv.CONNECT_TIMEOUT),
                                 input=json.dumps(batch), check=False,
                                 timeout=60 + security_kv.CONNECT_TIMEOUT * len(batch))  # fmt: skip
    if proc.returncode:
        raise rolestack_lab.LabError(f"dialling from {source} failed: {proc.stderr.strip()[-300:]}")
    return [tuple(item) for item in json.loads(proc.stdout)]


def _others(lab):
    return sorted(host for host in lab.hosts if host != lab.salt_host)


def check_sshd_reachable_only_from_the_salt_host(target):
    """
    Port 22 of every host but the salt host answers the salt host (the control: a port closed to everyone proves
    nothing) and does not answer another host (the first web host, or the first other host, trying every host).
    """
    lab = getattr(target, "lab", target)
    others = _others(lab)
    if len(others) < 2:
        return False, "the lab needs two hosts besides the salt host"
    outsider = next((h for h in others if set(lab.hosts[h]["roles"]) & set(security_kv.WEB_ROLES)), others[0])
    problems = []
    for host, (outcome, answer) in zip(others, _dial(lab, lab.salt_host, others), strict=True):
        if outcome != "open" or not answer.startswith("SSH-2.0-"):
            problems.append(f"{host}:22 does not answer the salt host ({outcome} {answer.strip()[:40]!r})")
    targets = [host for host in others if host != outsider]
    for host, (outcome, answer) in zip(targets, _dial(lab, outsider, targets), strict=True):
        if outcome == "open":
            problems.append(f"{host}:22 answered {outsider} ({answer.strip()[:40]!r})")
    return not problems, "; ".join(problems) or (
        f"port 22 of {len(others)} host(s) open to {lab.salt_host}, closed to {outsider}"
    )


def check_sshd_admits_only_the_salt_host(target):
    """
    sshd's effective configuration (``sshd -T``) on every host: no password, no keyboard-interactive, no root
    login; and on every host but the salt host, AllowUsers admits the salt host's address and loopback only.
    """
    lab = getattr(target, "lab", target)
    salt_address = lab.hosts[lab.salt_host]["address"]
    wanted = sorted([f"*@{salt_address}", "*@127.0.0.1", "*@::1"])
    problems = []
    for host in sorted(lab.hosts):
        proc = rolestack_lab.in_host(lab, host, "/usr/sbin/sshd", "-T", check=False, timeout=60)
        if proc.returncode:
            problems.append(f"{host}: sshd -T failed: {proc.stderr.strip()[-200:]}")
            continue
        effective = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.partition(" ")
            effective.setdefault(key, []).append(value)
        for key, value in HARDENED.items():
            if effective.get(key) != [value]:
                problems.append(f"{host}: {key} {effective.get(key)}, expected {value}")
        allow = sorted(effective.get("allowusers", []))
        if host != lab.salt_host and allow != wanted:
            problems.append(f"{host}: allowusers {allow}, expected {wanted}")
    return not problems, "; ".join(problems) or (
        f"{len(lab.hosts)} host(s) hardened; all but {lab.salt_host} admit {salt_address} and loopback only"
    )


CHECKS = {
    "sshd_reachable_only_from_the_salt_host": check_sshd_reachable_only_from_the_salt_host,
    "sshd_admits_only_the_salt_host": check_sshd_admits_only_the_salt_host,
}
