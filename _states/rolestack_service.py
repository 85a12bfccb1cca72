"""
Salt's ``service.running``, ``service.dead`` and ``service.enabled`` for systemd units, decided with one
``systemctl show`` first (``states/*``: every service the roles run).

When the unit is already as asked (loaded, no daemon-reload pending, active or not, enabled or disabled), the state
reports it so and salt's state is not run; otherwise salt's own state runs with every argument as given, and
decides (``test=True`` reaches it unchanged). ``watch`` works as on ``service``: ``mod_watch`` is salt's (reload or
restart of a running service, start of a stopped one).

Why: salt's service states ask systemd four or five times per state, ~50 ms of each no-op highstate per service
(``_utils/rolestack_systemd.py``).
"""

import logging

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_systemd as systemd
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "rolestack_service"


def __virtual__():
    if MISSING_UTIL:
        return (False, f"rolestack_service: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _props(name):
    """The unit's properties, {} when systemctl cannot say (salt's state then decides: also on a host without systemd)."""
    if "service.systemctl_reload" not in __salt__:  # salt's service module is not systemd's here
        return {}
    proc = __salt__["cmd.run_all"](
        systemd.show_argv(name), python_shell=False, ignore_retcode=True, output_loglevel="quiet"
    )
    return systemd.parse_show(proc["stdout"]) if proc["retcode"] == 0 else {}


def _settled(name, comment):
    return {"name": name, "result": True, "changes": {}, "comment": comment}


def running(name, enable=None, **kwargs):
    """
    The service ``name`` runs (and is enabled, or disabled, as ``enable`` says): ``service.running`` with the same
    arguments, run only when ``systemctl show`` finds the unit otherwise.

    .. code-block:: yaml

        ssh-service:
          rolestack_service.running:
            - name: ssh
            - enable: True
            - reload: True
            - watch:
              - file: ssh-sshd-config
    """
    if systemd.running_settled(_props(name), enable):
        return _settled(name, f"The service {name} is already running")
    ret = __states__["service.running"](name, enable=enable, **kwargs)
    return _enabled_at_boot(name, ret) if enable else ret


def dead(name, enable=None, **kwargs):
    """
    The service ``name`` is stopped (and enabled, or disabled, as ``enable`` says): ``service.dead`` with the same
    arguments, run only when ``systemctl show`` finds the unit otherwise. A unit systemd does not know is left to
    ``service.dead`` (which reports it absent).

    .. code-block:: yaml

        salt-rsync-standalone-off:
          rolestack_service.dead:
            - name: rsync
            - enable: False
    """
    if systemd.dead_settled(_props(name), enable):
        return _settled(name, f"The service {name} is already dead")
    return __states__["service.dead"](name, enable=enable, **kwargs)


def enabled(name, **kwargs):
    """
    The service ``name`` starts at boot: ``service.enabled`` with the same arguments, run only when
    ``systemctl show`` finds the unit otherwise.

    .. code-block:: yaml

        firewall-boot:
          rolestack_service.enabled:
            - name: rolestack-firewall
    """
    if systemd.enabled_settled(_props(name)):
        return _settled(name, f"Service {name} is already enabled, and is in the desired state")
    return _enabled_at_boot(name, __states__["service.enabled"](name, **kwargs))


def _enabled_at_boot(name, ret):
    """
    After salt's state, a unit systemd still calls ``indirect`` or ``disabled`` is enabled with ``service.enable``:
    salt counts any ``systemctl is-enabled`` exit 0 as enabled, and a native unit next to a SysV script whose rc
    links say stop (xinetd's) is ``indirect``: it would not start at boot. Nothing is reported when enabling does
    not make it ``enabled`` (a unit without an [Install] section), so a no-op run stays a no-op.
    """
    if ret.get("result") is False or systemd.boot_state(_props(name)) not in systemd.NOT_STARTED_AT_BOOT:
        return ret
    if __opts__["test"]:
        return {**ret, "result": None, "comment": f"{ret.get('comment', '')}\nService {name} would be enabled at boot"}
    __salt__["service.enable"](name)
    if systemd.boot_state(_props(name)) != "enabled":
        log.warning("rolestack_service: %s is still not enabled at boot after systemctl enable", name)
        return ret
    return {
        **ret,
        "changes": {**ret.get("changes", {}), name: {"enabled_at_boot": True}},
        "comment": f"{ret.get('comment', '')}\nService {name} enabled at boot",
    }


def mod_watch(name, sfun=None, **kwargs):
    """
    A watched state changed: salt's ``service.mod_watch`` (reload or restart when running, start otherwise). The
    state system calls it for a ``watch`` requisite that reports changes:

    .. code-block:: yaml

        salt-rsync-xinetd:
          rolestack_service.running:
            - name: xinetd
            - reload: True
            - watch:
              - file: salt-rsync-xinetd-entry
    """
    return __states__["service.mod_watch"](name, sfun=sfun, **kwargs)
