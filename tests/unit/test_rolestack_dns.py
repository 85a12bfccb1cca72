"""The salt role's zones (_utils/rolestack_dns.py): the reverse zone, published records, the zone file."""

import copy

import pytest
import rolestack_dns as dns
import rolestack_inventory as inv
import yaml

from tests.support.paths import PILLAR_EXAMPLE


@pytest.fixture
def example():
    return yaml.safe_load((PILLAR_EXAMPLE / "inventory.yaml").read_text())


@pytest.mark.parametrize(
    "network, zone",
    [
        ("10.10.10.0/24", "10.10.10.in-addr.arpa"),
        ("10.10.10.128/25", "10.10.10.in-addr.arpa"),
        ("10.64.0.0/14", "10.in-addr.arpa"),
        ("172.16.0.0/16", "16.172.in-addr.arpa"),
        ("10.0.0.0/8", "10.in-addr.arpa"),
        ("fd00:10::/64", "0.0.0.0.0.0.0.0.0.1.0.0.0.0.d.f.ip6.arpa"),
    ],
)
def test_reverse_zone_name_is_the_smallest_zone_holding_the_network(network, zone):
    assert dns.reverse_zone_name(network) == zone


def test_a_ptr_for_every_host_with_an_address(example):
    derived = inv.derive(example, {"frontend1": ["10.10.10.61"]})
    reverse = derived["hosts"]["salt"]["dns_zone"]["reverse"]
    assert reverse["zone"] == "10.10.10.in-addr.arpa"
    by_name = {record["name"]: record for record in reverse["records"]}
    assert by_name["12"] == {"name": "12", "type": "PTR", "data": "db2.production.wpdn."}
    assert by_name["61"]["data"] == "frontend1.production.wpdn."
    assert len(reverse["records"]) == len(example["hosts"])
    # a pending host has none yet
    pending = inv.derive(example)["hosts"]["salt"]["dns_zone"]["reverse"]["records"]
    assert "61" not in {record["name"] for record in pending}


def test_a_wider_network_gets_multi_label_names():
    entries = [{"address": "10.65.1.7", "fqdn": "app1.p.wpdn"}, {"address": None, "fqdn": "x.p.wpdn"}]
    assert dns.reverse_zone("10.64.0.0/14", entries) == {
        "zone": "10.in-addr.arpa",
        "records": [{"name": "7.1.65", "type": "PTR", "data": "app1.p.wpdn."}],
    }


def test_published_records_join_the_forward_zone_and_are_checked(example):
    dkim = {"name": "mail._domainkey", "type": "TXT", "data": '"v=DKIM1; k=rsa; p=MIIB"'}
    records = inv.derive(example, published_records=[dkim])["hosts"]["salt"]["dns_zone"]["records"]
    assert dkim in records
    assert dkim not in inv.derive(example)["hosts"]["salt"]["dns_zone"]["records"]
    bad = [
        ({"name": "x", "type": "NS", "data": "a."}, r"published records\[0\].type: got 'NS'"),
        ({"name": "a b", "type": "TXT", "data": "x"}, r"published records\[0\].name: got 'a b'"),
        ({"name": "x", "type": "TXT", "data": "a\nb"}, r"published records\[0\].data"),
        ({"name": "x", "type": "TXT"}, r"published records\[0\]: got dict, expected a mapping with keys"),
    ]
    for record, message in bad:
        with pytest.raises(inv.InventoryError, match=message):
            inv.derive(copy.deepcopy(example), published_records=[record])


def test_zone_text_serial_depends_on_the_set_of_records_only():
    records = [
        {"name": "2", "type": "PTR", "data": "salt.p.wpdn."},
        {"name": "12", "type": "PTR", "data": "db2.p.wpdn."},
    ]
    first = dns.zone_text("10.10.10.in-addr.arpa", "salt.p.wpdn", records, contact="p.wpdn")
    assert dns.zone_text("10.10.10.in-addr.arpa", "salt.p.wpdn", records[::-1] + records, contact="p.wpdn") == first
    assert "hostmaster.p.wpdn." in first and "NS    salt.p.wpdn." in first
    changed = dns.zone_text("10.10.10.in-addr.arpa", "salt.p.wpdn", records[:1], contact="p.wpdn")
    serial = [line.split()[0] for line in first.splitlines() if "; serial" in line]
    assert serial != [line.split()[0] for line in changed.splitlines() if "; serial" in line]


def test_the_config_listens_where_asked():
    text = dns.config_text("production.wpdn", ["10.10.10.2", "127.0.0.1"])
    assert "  listen => [\n    10.10.10.2,\n    127.0.0.1,\n  ]\n  dns_port => 53\n}\n" in text
    assert "run_dir" not in text and "state_dir" not in text
    private = dns.config_text("z.test", ["127.0.0.1"], 5353, run_dir="/tmp/r", state_dir="/tmp/s")
    assert 'dns_port => 5353\n  run_dir => "/tmp/r"\n  state_dir => "/tmp/s"\n}\n' in private
    assert "/etc/gdnsd/zones/z.test" in private


def test_the_salt_host_gets_the_files_gdnsd_reads(example):
    dns_zone = inv.derive(example)["hosts"]["salt"]["dns_zone"]
    fqdn = "salt.production.wpdn"
    assert dns_zone["text"] == dns.zone_text("production.wpdn", fqdn, dns_zone["records"])
    reverse = dns_zone["reverse"]
    assert reverse["text"] == dns.zone_text(reverse["zone"], fqdn, reverse["records"], "production.wpdn")
    assert "hostmaster.production.wpdn." in reverse["text"] and "\n12 " in reverse["text"]
    assert dns_zone["config"] == dns.config_text("production.wpdn", ["10.10.10.2", "127.0.0.1"])


def test_no_files_while_the_salt_host_address_is_pending(example):
    example["hosts"]["salt"] = {}
    dns_zone = inv.derive(example)["hosts"]["salt"]["dns_zone"]
    assert dns_zone["records"] and not {"text", "config"} & set(dns_zone) and "text" not in dns_zone["reverse"]
