"""
The salt role's zones (docs/roles/salt.md): pure logic, no Salt dunders.

- :func:`reverse_zone`: the reverse zone of the inventory network (``in-addr.arpa``/``ip6.arpa``), a PTR record
  per host with an address, beside the forward zone's A records (the inventory util's ``_dns_records``);
- :func:`published_records`: the place for records other roles publish into the forward zone (the mail role's
  DKIM TXT, for instance): checked here, appended by the derivation; none yet;
- :func:`zone_text`: a zone file (sorted, de-duplicated records, the serial from a hash of the rest) and
  :func:`config_text`: gdnsd's configuration; the inventory derivation gives both to the salt host's pillar
  (``rolestack:dns_zone``), the SLS writes them as they are (no template to fetch and render on each run).
"""

import hashlib
import ipaddress
import re

# what another role may publish into the forward zone, and what a record's name may be (relative to the zone)
PUBLISHED_TYPES = ("A", "AAAA", "CNAME", "MX", "SRV", "TXT")
RECORD_NAME_RE = re.compile(r"^(@|[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*)$")
RECORD_KEYS = ("name", "type", "data")


def reverse_zone_name(network):
    """
    The reverse zone holding the PTR records of ``network``: the smallest zone on a label boundary that contains it
    (octets for IPv4, nibbles for IPv6): 10.10.10.0/24 -> 10.10.10.in-addr.arpa, 10.64.0.0/14 -> 10.in-addr.arpa.
    """
    network = ipaddress.ip_network(network)
    step = 8 if network.version == 4 else 4
    prefix = max(step, network.prefixlen - network.prefixlen % step)
    labels = network.network_address.reverse_pointer.split(".")
    return ".".join(labels[(network.max_prefixlen - prefix) // step :])


def reverse_zone(network, entries):
    """
    The reverse zone of the inventory network: ``{"zone": name, "records": [{name, type: PTR, data}]}``, one PTR per
    host entry with an address inside it (``data`` the host's FQDN, absolute), names relative to the zone, sorted by
    address.
    """
    zone = reverse_zone_name(network)
    suffix = "." + zone
    records = []
    for entry in sorted((e for e in entries if e["address"]), key=lambda e: ipaddress.ip_address(e["address"])):
        pointer = ipaddress.ip_address(entry["address"]).reverse_pointer
        if pointer.endswith(suffix):
            records.append({"name": pointer[: -len(suffix)], "type": "PTR", "data": entry["fqdn"] + "."})
    return {"zone": zone, "records": records}


def published_records(records, source="published records"):
    """
    Records other roles publish into the forward zone (``{name, type, data}``, name relative to the zone), checked
    and returned as a list; ``ValueError`` names the bad one. ``None`` or empty: none (today's case).
    """
    out = []
    for index, record in enumerate(records or ()):
        path = f"{source}[{index}]"
        if not isinstance(record, dict) or set(record) != set(RECORD_KEYS):
            raise ValueError(f"{path}: got {type(record).__name__}, expected a mapping with keys name, type, data")
        name, kind, data = record["name"], record["type"], record["data"]
        if not isinstance(name, str) or not RECORD_NAME_RE.match(name):
            raise ValueError(f"{path}.name: got {name!r}, expected a name relative to the zone")
        if kind not in PUBLISHED_TYPES:
            raise ValueError(f"{path}.type: got {kind!r}, expected one of {', '.join(PUBLISHED_TYPES)}")
        if not isinstance(data, str) or not data or "\n" in data:
            raise ValueError(f"{path}.data: got {type(data).__name__}, expected one line of record data")
        out.append({"name": name, "type": kind, "data": data})
    return out


def zone_text(zone, nameserver, records, contact=None):
    """
    The zone file of ``zone`` served by ``nameserver`` (its FQDN, the SOA and NS), ``records`` ``{name, type, data}``
    sorted and de-duplicated, so the file depends only on the set of records; the SOA serial is derived from a hash
    of everything else: it changes when (and only when) the data changes. ``contact``: the SOA mailbox's domain
    (``hostmaster.<contact>``; default the zone itself; the reverse zone gives the forward zone's).
    """
    lines = sorted({f"{r['name']:<32} {r['type'].upper():<5} {r['data']}" for r in records})
    body = (
        "$TTL 300\n"
        f"@                                60 SOA {nameserver}. hostmaster.{contact or zone}. (\n"
        "                                   @SERIAL@ ; serial: from a hash of this file's data\n"
        "                                   3600     ; refresh\n"
        "                                   600      ; retry\n"
        "                                   86400    ; expire\n"
        "                                   60       ; negative-cache TTL\n"
        "                                 )\n"
        f"@                                NS    {nameserver}." + "".join("\n" + line for line in lines)
    )
    serial = int(hashlib.sha256(body.encode()).hexdigest()[:8], 16)
    return (
        f"; managed by salt (rolestack salt role): the internal zone {zone}, generated from the inventory.\n"
        "; Edit the inventory (pillar), not this file.\n" + body.replace("@SERIAL@", str(serial)) + "\n"
    )


def config_text(zone, listen, port=53, conf_dir="/etc/gdnsd", run_dir=None, state_dir=None):
    """
    gdnsd's configuration: listen on each address of ``listen`` at ``port``, the zones under ``conf_dir``/zones.
    ``run_dir``/``state_dir``: a private instance's directories (the tests'); default gdnsd's own.
    """
    lines = [
        f"# managed by salt (rolestack salt role): gdnsd serves the internal zone {zone}",
        f"# (zone data: {conf_dir}/zones/{zone}). Edit the inventory, not this file.",
        "options => {",
        "  listen => [",
        *(f"    {address}," for address in listen),
        "  ]",
        f"  dns_port => {port}",
    ]
    lines += [f'  {key} => "{value}"' for key, value in (("run_dir", run_dir), ("state_dir", state_dir)) if value]
    return "\n".join([*lines, "}"]) + "\n"
