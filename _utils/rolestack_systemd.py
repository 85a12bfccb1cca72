"""
What one ``systemctl show`` says of a unit, and whether salt's ``service`` states would find nothing to do there
(``_states/rolestack_service.py``). Pure logic, no Salt dunders. Unit tests: tests/unit/test_rolestack_service.py.

Salt's ``service.running`` asks systemd four or five times per state (is it active, enabled, does its unit need a
daemon-reload, ...), each a process run through ``cmd.run``: ~50 ms of every no-op highstate per service. One
``systemctl show`` answers all of it.
"""

# what systemctl calls a unit file that no boot starts although salt's service.enabled says "enabled"
NOT_STARTED_AT_BOOT = ("indirect", "disabled")
# the properties the verdicts read; systemctl prints them as KEY=VALUE lines
PROPERTIES = ("LoadState", "ActiveState", "UnitFileState", "NeedDaemonReload")


def show_argv(name):
    """The argv of the one query: the unit's properties, never a pager, never a password prompt."""
    unit = name if "." in name else f"{name}.service"
    return ["systemctl", "show", "--no-pager", f"--property={','.join(PROPERTIES)}", "--", unit]


def parse_show(text):
    """``systemctl show`` output as a dict of the properties asked; a property missing from it is absent."""
    found = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key in PROPERTIES:
            found[key] = value.strip()
    return found


def _settled_unit(props):
    # a unit systemd knows as a file (not masked, not-found) whose file has not changed since systemd read it
    return props.get("LoadState") == "loaded" and props.get("NeedDaemonReload") == "no"


def running_settled(props, enable):
    """
    True when ``service.running`` with ``enable`` would change nothing: active, and enabled when ``enable`` is
    True, disabled when it is False (None: either). Anything else (a state systemd reports that this does not
    know, say ``static`` or ``indirect``) is left to salt's state to decide.
    """
    if not _settled_unit(props) or props.get("ActiveState") != "active":
        return False
    return _enable_settled(props, enable)


def dead_settled(props, enable):
    """True when ``service.dead`` with ``enable`` would change nothing: not running, and enabled/disabled as asked."""
    if not _settled_unit(props) or props.get("ActiveState") not in ("inactive", "failed"):
        return False
    return _enable_settled(props, enable)


def enabled_settled(props):
    """True when ``service.enabled`` would change nothing."""
    return _settled_unit(props) and props.get("UnitFileState") == "enabled"


def _enable_settled(props, enable):
    if enable is None:
        return True
    return props.get("UnitFileState") == ("enabled" if enable else "disabled")


def boot_state(props):
    """The unit file state (``enabled``, ``disabled``, ``indirect``, ...) of a loaded unit, else None."""
    return props.get("UnitFileState") if props.get("LoadState") == "loaded" else None


# -- the texts of the scheduled jobs' units (a oneshot service and the timer that starts it)

SALT_CALL = "/usr/bin/salt-call"  # where Debian's salt packages put it (the lab links its venv's there)


def daily_utc(time):
    """systemd's OnCalendar= value of a daily time in UTC ('HH:MM')."""
    return f"*-*-* {time}:00 UTC"


def timer_text(description, calendars, managed_by):
    """
    A timer unit: ``calendars`` are systemd ``OnCalendar=`` values; a run missed while the host was off runs at boot
    (``Persistent``). ``managed_by``: the comment line saying which SLS writes it and where to change it.
    """
    lines = [f"# managed by salt ({managed_by})", "[Unit]", f"Description=rolestack: {description}", "", "[Timer]"]
    lines += [f"OnCalendar={value}" for value in calendars]
    lines += ["Persistent=true", "RandomizedDelaySec=60", "", "[Install]", "WantedBy=timers.target"]
    return "\n".join(lines) + "\n"


def salt_call_service_text(description, function, managed_by, after="network-online.target"):
    """
    The oneshot a timer starts: ``salt-call <function>``, its exit status passed through (a failed run is a failed
    unit). systemd never starts a oneshot twice at once: runs cannot overlap.
    """
    return (
        f"# managed by salt ({managed_by})\n"
        "[Unit]\n"
        f"Description=rolestack: {description}\n"
        f"After={after}\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={SALT_CALL} --retcode-passthrough --log-level=warning --out=json {function}\n"
    )
