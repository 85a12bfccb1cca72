"""
MariaDB GTIDs for rolestack, shared by the ``mariadb_replication`` execution module and state (on the db hosts)
and the ``db`` runner (on the master), which cannot import an execution module: parsing positions and binlog
states, which transactions of one server another never had, and the operator's way out when a server forked.

Pure: no server, no Salt loader (only Salt's exception). Unit tests in tests/unit/test_rolestack_gtid.py.
"""

import re

from salt.exceptions import SaltInvocationError

_GTID = re.compile(r"\s*(\d+)-(\d+)-(\d+)\s*")

# what to do with a db host holding transactions its primary never had (it forked): named by the db runner's
# refusals (rejoin, failover) and by the replica state. It cannot rejoin without losing or duplicating them.
REBUILD_HINT = (
    "rebuild it as a new replica: destroy the VM and provision a new one under the same name (docs/procedures.md, "
    "'Replace a VM': salt-run minion_key.replace {host} fingerprint=<fp>, then salt-call state.highstate on it; in "
    "the lab: make lab-replace HOST={host}); its first highstate copies the primary's data (mariabackup) and "
    "replicates"
)


def parse(text, binlog_state=False):
    """
    A GTID position (``"0-1-100,1-2-7"``: the last GTID of each domain) or, with ``binlog_state``, a binlog state
    (the last GTID of each domain *and server*: a domain may repeat) as ``[(domain, server_id, seq_no), ...]`` in
    the given order. Empty or None is empty; anything malformed, out of range or repeated raises
    SaltInvocationError.
    """
    what = "GTID binlog state" if binlog_state else "GTID position"
    if text is None:
        return []
    if not isinstance(text, str):
        raise SaltInvocationError(f"a {what} is a string like '0-1-100', not {text!r}")
    if not text.strip():
        return []
    parsed, seen = [], set()
    for item in text.split(","):
        match = _GTID.fullmatch(item)
        if not match:
            raise SaltInvocationError(f"malformed GTID {item.strip()!r} in {what} {text!r}")
        domain, server, seq = (int(part) for part in match.groups())
        if domain >= 2**32 or server >= 2**32 or seq >= 2**64:
            raise SaltInvocationError(f"GTID {item.strip()!r} is out of range in {what} {text!r}")
        key = (domain, server) if binlog_state else domain
        if key in seen:
            repeated = f"domain {domain} server {server}" if binlog_state else f"domain {domain}"
            raise SaltInvocationError(f"{repeated} appears twice in {what} {text!r}")
        seen.add(key)
        parsed.append((domain, server, seq))
    return parsed


def order(a, b):
    """
    How GTID position ``a`` stands to ``b``, domain by domain: ``"equal"``, ``"ahead"`` (``a`` holds all of ``b``
    and more), ``"behind"`` or ``"diverged"``. Sequence numbers order GTIDs within a domain (``gtid_strict_mode``),
    whatever server wrote them; the same sequence number written by two different servers is a fork, never
    "equal": two primaries each wrote their own transaction number N. A missing domain counts as sequence -1.
    The one GTID order of rolestack: the execution module, the state and the db runner all use it.
    """
    left = {domain: (server, seq) for domain, server, seq in parse(a)}
    right = {domain: (server, seq) for domain, server, seq in parse(b)}
    ahead = behind = forked = False
    for domain in left.keys() | right.keys():
        server_a, seq_a = left.get(domain, (None, -1))
        server_b, seq_b = right.get(domain, (None, -1))
        ahead = ahead or seq_a > seq_b
        behind = behind or seq_a < seq_b
        forked = forked or (seq_a == seq_b and server_a != server_b)
    if forked or (ahead and behind):
        return "diverged"
    return "ahead" if ahead else "behind" if behind else "equal"


def at_least(a, b):
    """Whether GTID position ``a`` has reached ``b`` in every domain of ``b`` without forking from it."""
    return order(a, b) in ("equal", "ahead")


def applied(binlog_state, slave_pos=""):
    """
    Everything a server has applied, as one binlog state (``"domain-server-seq,..."``, the last GTID of each domain
    and server): its ``gtid_binlog_state`` (what it logged: written on it, or replicated with log_slave_updates) and
    its ``gtid_slave_pos`` (what its replica threads applied, or a backup it was provisioned from held: a replica
    restored by mariabackup holds the source's GTIDs there only, its binary log may be empty). With
    ``gtid_strict_mode`` a server that applied ``0-1-12`` applied that server's earlier GTIDs of the domain too.
    """
    have = {}
    for domain, server, seq in parse(binlog_state, binlog_state=True) + parse(slave_pos):
        have[(domain, server)] = max(seq, have.get((domain, server), -1))
    return ",".join(f"{domain}-{server}-{seq}" for (domain, server), seq in have.items())


def resume_position(binlog_pos, slave_pos):
    """
    Where a server that stops being a primary (or never replicated since it was restored) continues replicating:
    per domain, the later (higher sequence number) of its ``gtid_binlog_pos`` (its own last transaction, when it
    wrote some) and its ``gtid_slave_pos`` (what it applied, or what the backup it was restored from held: its
    binary log may hold none of it). The binary log's GTID wins a tie. A GTID position string.
    """
    latest = {}
    for domain, server, seq in parse(slave_pos) + parse(binlog_pos):
        if seq >= latest.get(domain, (None, -1))[1]:
            latest[domain] = (server, seq)
    return ",".join(f"{domain}-{server}-{seq}" for domain, (server, seq) in sorted(latest.items()))


def missing(position, binlog_state):
    """
    The GTIDs of ``position`` (a server's ``gtid_binlog_pos``: its last GTID per domain) that a server whose
    ``gtid_binlog_state`` (the last GTID of every domain and server its binary log ever held) is ``binlog_state``
    never had, as ``"domain-server-seq"`` strings in the order of ``position``. With ``gtid_strict_mode``, a
    server that logged ``0-1-12`` logged ``0-1-1`` .. ``0-1-11`` of that server too, so the last one per (domain,
    server) is enough. An empty list: every transaction of ``position`` is in the other's binary log.
    """
    have = {(domain, server): seq for domain, server, seq in parse(binlog_state, binlog_state=True)}
    return [
        f"{domain}-{server}-{seq}" for domain, server, seq in parse(position) if have.get((domain, server), -1) < seq
    ]
