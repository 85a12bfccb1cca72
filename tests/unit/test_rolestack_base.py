"""The base role's files as text (_utils/rolestack_base.py): /etc/resolv.conf and the login banners."""

import rolestack_base as base

PLATFORM = {"name": "webplatform", "level": "production", "domain": "wpdn", "zone": "production.wpdn"}
APP1 = {"name": "app1", "roles": ["app"], "address": "10.10.10.51", "level": "production"}
RULE = "=" * 64


def test_resolv_conf_points_at_the_dns_server_and_searches_the_zone():
    assert base.resolv_conf_text(["10.10.10.2"], ["production.wpdn"]) == (
        "# managed by salt (rolestack base role): the salt master serves the internal zone\n"
        "nameserver 10.10.10.2\n"
        "search production.wpdn\n"
        "options timeout:2 attempts:2\n"
    )


def test_resolv_conf_has_a_line_per_server_and_one_search_line():
    lines = base.resolv_conf_text(["10.0.0.1", "10.0.0.2"], ["a.example", "b.example"]).splitlines()
    assert lines[1:] == [
        "nameserver 10.0.0.1",
        "nameserver 10.0.0.2",
        "search a.example b.example",
        "options timeout:2 attempts:2",
    ]


def test_banner_of_a_production_host_names_it_and_warns():
    assert base.banner_text(PLATFORM, APP1) == (
        f"\n{RULE}\n"
        " webplatform PRODUCTION -- app1 (app)\n"
        " environment level: production   zone: production.wpdn\n"
        " PRODUCTION: changes here affect users.\n"
        f"{RULE}\n"
    )


def test_banner_of_another_level_lists_every_role_and_does_not_warn():
    staging = dict(PLATFORM, level="staging", zone="staging.wpdn")
    text = base.banner_text(staging, {"name": "db1-masterdb", "roles": ["db", "masterdb"]})
    assert text.splitlines()[2:5] == [
        " webplatform STAGING -- db1-masterdb (db, masterdb)",
        " environment level: staging   zone: staging.wpdn",
        RULE,
    ]
    assert "PRODUCTION" not in text


def test_banner_of_a_minion_the_inventory_does_not_know_names_no_host():
    for host in (None, {}):
        assert base.banner_text(PLATFORM, host).splitlines()[2] == " webplatform PRODUCTION"


def test_the_jump_box_motd_shows_the_ssh_config_and_issue_net_never_does():
    ssh_config = "# the platform\n\nHost salt salt.production.wpdn\n    HostName 10.10.10.2\n"
    salt = {"name": "salt", "roles": ["salt"]}
    banners = base.banners(PLATFORM, salt, ssh_config)
    assert banners["issue_net"] == base.banner_text(PLATFORM, salt)
    assert "Host salt" not in banners["issue_net"] and banners["issue_net"].endswith(f"users.\n{RULE}\n")
    assert banners["motd"] == banners["issue_net"] + (
        " This is the jump box: reach every host through it (ssh -J). The ssh configuration to copy\n"
        " (also in /etc/rolestack/ssh_config, known_hosts in /etc/ssh/ssh_known_hosts):\n"
        "\n"
        f"{ssh_config}\n"
        f"{RULE}\n"
    )
    # any other host: the same banner before and after login
    other = base.banners(PLATFORM, APP1)
    assert other["motd"] == other["issue_net"] == base.banner_text(PLATFORM, APP1)
