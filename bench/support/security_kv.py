"""
The hostile battery's checks of the key-value stores (issue 11): the sessions and object-cache servers answer
only the hosts whose roles use them (the web hosts, through their proxy), and redis answers nobody who has not
authenticated. ``security_checks.CHECKS`` lists them with the others; same contract: ``check(target) -> (ok,
detail)``, every connection made from inside a lab host to a lab address.
"""

import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
import rolestack_lab  # noqa: E402

WEB_ROLES = ("app", "frontend", "jobrunner")
REDIS_PORT, MEMCACHED_PORT = 6379, 11211
# the ports each key-value role serves, and what a healthy server answers a first line with
PORTS = {"sessions": (REDIS_PORT, MEMCACHED_PORT), "redis": (REDIS_PORT,), "memcache": (MEMCACHED_PORT,)}
HELLO = {REDIS_PORT: "PING\r\n", MEMCACHED_PORT: "version\r\n"}
CONNECT_TIMEOUT = 2

# runs inside a lab host (its python3): for each [address, port, first line], what the connection met
DIAL = """
import json, socket, sys
out = []
for address, port, hello in json.load(sys.stdin):
    try:
        with socket.create_connection((address, port), timeout=float(sys.argv[1])) as conn:
            conn.sendall(hello.encode())
            out.append(["open", conn.recv(200).decode("latin-1")])
    except socket.timeout:
        out.append(["timeout", ""])
    except ConnectionRefusedError:
        out.append(["refused", ""])
    except OSError as err:
        out.append(["error", type(err).__name__])
print(json.dumps(out))
"""


class KeyValueProbe:
    """The lab's hosts by role, and connections from one lab host to others."""

    def __init__(self, target):
        self.lab = getattr(target, "lab", target)
        self.inventory = yaml.safe_load((self.lab.pillar_repo / "inventory.yaml").read_text())

    def roles(self, host):
        return set(self.lab.hosts[host]["roles"])

    def with_roles(self, roles):
        return [host for host in sorted(self.lab.hosts) if self.roles(host) & set(roles)]

    def address(self, host):
        return self.lab.hosts[host]["address"]

    def dial(self, source, targets):
        """[(outcome, first answer)] for each (host, port) of ``targets``, connecting from ``source``."""
        batch = [[self.address(host), port, HELLO[port]] for host, port in targets]
        proc = rolestack_lab.in_host(self.lab, source, "python3", "-c", DIAL, str(CONNECT_TIMEOUT), input=json.dumps(batch), check=False,
                                     timeout=60 + CONNECT_TIMEOUT * len(batch))  # fmt: skip
        if proc.returncode:
            raise rolestack_lab.LabError(f"dialling from {source} failed: {proc.stderr.strip()[-300:]}")
        return [tuple(item) for item in json.loads(proc.stdout)]


def _served(probe):
    """(host, port) of every key-value server in the lab."""
    return [(host, port) for host in probe.with_roles(PORTS) for role in PORTS if role in probe.roles(host)
            for port in PORTS[role]]  # fmt: skip


def check_redis_refuses_unauthenticated(target):
    """A web host (allowed through the firewall) that has not sent AUTH gets NOAUTH from every redis server."""
    probe = KeyValueProbe(target)
    web = probe.with_roles(WEB_ROLES)
    servers = [(host, port) for host, port in _served(probe) if port == REDIS_PORT]
    if not web or not servers:
        return False, "the lab has no web host or no redis server to try"
    problems = []
    for (host, _), (outcome, answer) in zip(servers, probe.dial(web[0], servers), strict=True):
        if outcome != "open":
            problems.append(f"{host}:{REDIS_PORT} unreachable from {web[0]} ({outcome}): nothing proven")
        elif not answer.startswith("-NOAUTH"):
            problems.append(f"{host}:{REDIS_PORT} answered {web[0]}'s unauthenticated PING with {answer.strip()!r}")
    return not problems, "; ".join(problems) or f"NOAUTH from {len(servers)} redis server(s) to {web[0]}"


def check_key_value_ports_only_for_web_hosts(target):
    """
    Every redis/memcached port of the sessions, memcache and redis hosts is closed to hosts without a web role
    (the mail host, a db host) and open to a web host (the control: a port closed to everyone proves nothing).
    """
    probe = KeyValueProbe(target)
    served = _served(probe)
    web = probe.with_roles(WEB_ROLES)
    outsiders = probe.with_roles(("mail", "db"))[:2]
    if not served or not web or not outsiders:
        return False, "the lab needs key-value servers, a web host and a mail or db host"
    problems = []
    for (host, port), (outcome, _) in zip(served, probe.dial(web[0], served), strict=True):
        if outcome != "open":
            problems.append(f"{host}:{port} closed to the web host {web[0]} ({outcome})")
    for outsider in outsiders:
        targets = [(host, port) for host, port in served if host != outsider]
        for (host, port), (outcome, answer) in zip(targets, probe.dial(outsider, targets), strict=True):
            if outcome == "open":
                problems.append(f"{host}:{port} answered {outsider} ({answer.strip()[:40]!r})")
    return not problems, "; ".join(problems) or (
        f"{len(served)} port(s) open to {web[0]}, closed to {', '.join(outsiders)}"
    )


CHECKS = {
    "redis_refuses_unauthenticated": check_redis_refuses_unauthenticated,
    "key_value_ports_only_for_web_hosts": check_key_value_ports_only_for_web_hosts,
}
