"""
The files of the base role (docs/roles/base.md): /etc/resolv.conf and the login banners (/etc/issue.net before
login, /etc/motd after it), as text. Pure logic, no Salt dunders.

The inventory util derives them once per inventory (``rolestack:dns:resolv_conf``, ``rolestack:banner``) and the
SLS writes them with ``contents``: a minion makes no round trip to the master for a template and renders none.
Unit tests: tests/unit/test_rolestack_base.py.
"""

import rolestack_jumpbox as jumpbox

BANNER_RULE = "=" * 64


def resolv_conf_text(servers, search):
    """/etc/resolv.conf: a ``nameserver`` line per server (the salt host), ``search`` the zone, short timeouts."""
    lines = ["# managed by salt (rolestack base role): the salt master serves the internal zone"]
    lines += [f"nameserver {server}" for server in servers]
    lines += [f"search {' '.join(search)}", "options timeout:2 attempts:2"]
    return "\n".join(lines) + "\n"


def banner_text(platform, host=None, ssh_config=None):
    """
    A login banner: the platform's name and level, the host's name and roles (``host``: its ``rolestack:host``,
    None for a minion the inventory does not know), a warning on production; with ``ssh_config`` (the jump box's
    motd) the ssh configuration operators copy, below it. Starts with an empty line, ends with one newline.
    """
    level = platform["level"]
    title = f" {platform['name']} {level.upper()}"
    if host and host.get("name"):
        title += f" -- {host['name']} ({', '.join(host['roles'])})"
    lines = ["", BANNER_RULE, title, f" environment level: {level}   zone: {platform['zone']}"]
    if level == "production":
        lines.append(" PRODUCTION: changes here affect users.")
    lines.append(BANNER_RULE)
    text = "\n".join(lines) + "\n"
    if ssh_config:
        text += (
            " This is the jump box: reach every host through it (ssh -J). The ssh configuration to copy\n"
            f" (also in {jumpbox.SSH_CONFIG}, known_hosts in {jumpbox.KNOWN_HOSTS}):\n"
            f"\n{ssh_config}\n{BANNER_RULE}\n"
        )
    return text


def banners(platform, host=None, ssh_config=None):
    """
    ``rolestack:banner`` of one host: ``issue_net`` (shown by sshd before login: never the ssh configuration) and
    ``motd`` (after login: on the jump box, with ``ssh_config``).
    """
    return {"issue_net": banner_text(platform, host), "motd": banner_text(platform, host, ssh_config)}
