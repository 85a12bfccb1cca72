"""The base role on every host, and DNS served by the salt host (gdnsd) from the inventory."""

import pytest

from tests.e2e.conftest import rolestack_lab

SMALL = sorted(rolestack_lab.PROFILES["small"])
ZONE = "production.wpdn"


@pytest.mark.parametrize("host", SMALL)
def test_resolver_points_at_the_salt_host(lab, host):
    resolv = lab.read(host, "/etc/resolv.conf").splitlines()
    assert f"nameserver {lab.address('salt')}" in resolv
    assert f"search {ZONE}" in resolv


@pytest.mark.parametrize("host", SMALL)
def test_hosts_block_and_banner(lab, host):
    hosts = lab.read(host, "/etc/hosts")
    assert f"{lab.address('salt')} salt.{ZONE} salt" in hosts
    assert f"{lab.address('db1-masterdb')} db1-masterdb.{ZONE} db1-masterdb masterdb.{ZONE} masterdb" in hosts
    assert f"{lab.address(host)} {host}.{ZONE} {host}" in hosts
    for banner in ("/etc/motd", "/etc/issue.net"):
        text = lab.read(host, banner)
        assert "PRODUCTION" in text and host in text
    assert "Banner /etc/issue.net" in lab.read(host, "/etc/ssh/sshd_config.d/rolestack-banner.conf")


@pytest.mark.parametrize("host", SMALL)
def test_every_host_resolves_the_platform_through_dns(lab, host):
    # dig asks the nameserver of resolv.conf (never /etc/hosts): this is the salt host's gdnsd answering
    for name in [*SMALL, "masterdb"]:
        target = "db1-masterdb" if name == "masterdb" else name
        answer = lab.sh(host, "dig", "+short", "+search", "+time=2", name).stdout.split()
        assert answer == [lab.address(target)], (host, name, answer)
    missing = lab.sh(host, "dig", "+time=2", f"nosuchhost.{ZONE}").stdout
    assert "status: NXDOMAIN" in missing


def test_hosts_outside_the_profile_are_not_in_the_zone(lab):
    # the lab commits pillar.example/ reduced to the profile: no record for a host that does not exist
    answer = lab.sh("app1", "dig", "+short", "+search", "+time=2", "app2").stdout.split()
    assert answer == []


def test_gdnsd_runs_only_on_the_salt_host(lab):
    assert lab.sh("salt", "systemctl", "is-active", "gdnsd").stdout.strip() == "active"
    assert lab.sh("app1", "systemctl", "is-active", "gdnsd", check=False).stdout.strip() != "active"
