"""
twemproxy (nutcracker) on rolestack's web hosts: the config this host should run, its validation, the stats port
and a health report. docs/roles/sessions.md, "Proxy (twemproxy)".

The configuration comes from this minion's pillar only: ``rolestack:proxy`` (the pools the inventory derives for
web roles) and the redis passwords its pools name in ``rolestack:secrets`` (read with ``pillar.get`` and
``unmask=True``; never passed by a caller). The pure logic is in ``_utils/rolestack_twemproxy.py``.

Errors: an invalid pillar, a missing nutcracker binary, an unreadable stats port raise
:py:class:`CommandExecutionError`; bad arguments raise :py:class:`SaltInvocationError`.
"""

import logging
import os
import shutil
import tempfile

from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_twemproxy as tw
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "twemproxy"


def __virtual__():
    if MISSING_UTIL:
        return (False, f"twemproxy: the util {MISSING_UTIL} is missing (saltutil.sync_utils, or pip install)")
    return __virtualname__


def _proxy_pillar():
    # salt 3008 masks pillar values unless asked: the pools are not secret, but masked they are unreadable
    proxy = __salt__["pillar.get"]("rolestack:proxy", None, unmask=True)
    if proxy is None:
        raise CommandExecutionError(
            f"no rolestack:proxy pillar for {__opts__.get('id')}: twemproxy runs on web hosts only "
            "(roles app, frontend, jobrunner)"
        )
    return proxy


def _secrets():
    return __salt__["pillar.get"]("rolestack:secrets", {}, unmask=True)


def _port(port, proxy=None):
    if port is None:
        return tw.stats_port(proxy if proxy is not None else _proxy_pillar())
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"port: got {type(port).__name__}, expected a port number 1..65535") from None
    if not 1 <= port <= 65535:
        raise SaltInvocationError(f"port: got {port}, expected a port number 1..65535")
    return port


def render():
    """
    The nutcracker configuration (YAML text) this host should run, from its pillar: one pool per entry of
    ``rolestack:proxy:pools`` on 127.0.0.1, tuned per pool role, redis pools with ``redis_auth``. The text holds
    redis passwords: the state writes it 0640 root:nutcracker.

    CLI Example:

    .. code-block:: bash

        salt app1 twemproxy.render
    """
    try:
        return tw.render(_proxy_pillar(), _secrets())
    except tw.ProxyConfigError as err:
        raise CommandExecutionError(str(err)) from err


def defaults():
    """
    The text of /etc/default/nutcracker for this host: Debian's service runs ``nutcracker $DAEMON_OPTS``; the
    options name our config and keep the stats port on 127.0.0.1 (nutcracker's default is 0.0.0.0:22222).

    CLI Example:

    .. code-block:: bash

        salt app1 twemproxy.defaults
    """
    return tw.render_defaults(tw.stats_port(_proxy_pillar()))


def validate(path=None):
    """
    Run ``nutcracker -t`` on a configuration file and return its verdict: ``{"valid": bool, "message":
    nutcracker's words, "path": ...}``. Without ``path``, the configuration ``render`` returns is checked (in a
    private temporary file, removed afterwards).

    CLI Example:

    .. code-block:: bash

        salt app1 twemproxy.validate
        salt app1 twemproxy.validate path=/etc/nutcracker/nutcracker.yml
    """
    if path is not None:
        if not isinstance(path, str) or not os.path.isabs(path):
            raise SaltInvocationError(f"path: got {path!r}, expected an absolute file path")
        if not os.path.isfile(path):
            raise SaltInvocationError(f"path: {path} is not a file")
    binary = shutil.which("nutcracker") or (os.access("/usr/sbin/nutcracker", os.X_OK) and "/usr/sbin/nutcracker")
    if not binary:
        raise CommandExecutionError("nutcracker is not installed (package nutcracker)")
    if path is not None:
        return _check(binary, path, path)
    text = render()
    directory = tempfile.mkdtemp(prefix="rolestack-twemproxy-")
    try:
        candidate = os.path.join(directory, "nutcracker.yml")
        with open(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(text)
        return _check(binary, candidate, "(rendered)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _check(binary, path, shown):
    ran = __salt__["cmd.run_all"](tw.check_command(path, binary), python_shell=False, ignore_retcode=True)
    valid, message = tw.verdict(ran["retcode"], ran.get("stdout"), ran.get("stderr"))
    return {"valid": valid, "message": message, "path": shown}


def stats(port=None):
    """
    nutcracker's stats port (on 127.0.0.1; port from ``rolestack:proxy:stats_port`` unless given), per pool
    (client connections, client errors, forward errors, ejections) and per server (connections, errors, eof,
    timeouts, ``server_ejected_at`` in µs, requests, responses). nutcracker refreshes the figures every
    ``--stats-interval`` (2 s as rolestack runs it).

    CLI Example:

    .. code-block:: bash

        salt app1 twemproxy.stats
        salt app1 twemproxy.stats port=22222
    """
    port = _port(port)
    try:
        return tw.parse_stats(tw.read_stats(port))
    except (OSError, ValueError) as err:
        raise CommandExecutionError(f"cannot read nutcracker's stats on 127.0.0.1:{port}: {err}") from err


def health(port=None, probe=True):
    """
    Per pool of this host's pillar: its servers up, ejected (by nutcracker, less than server_retry_timeout ago) or
    down (not ejected, but a TCP connection to it fails; ``probe=False`` skips those connections), the errors seen,
    and ``healthy`` (every server up). A pool missing from the stats (nutcracker runs an older config) is unhealthy.

    CLI Example:

    .. code-block:: bash

        salt -C 'I@rolestack:host:roles:app' twemproxy.health
        salt app1 twemproxy.health probe=False
    """
    proxy = _proxy_pillar()
    problems = tw.validate(proxy, _secrets())
    if problems:
        raise CommandExecutionError(str(tw.ProxyConfigError(problems)))
    report = stats(_port(port, proxy))
    reachable = {}
    if probe:
        for pool in proxy["pools"]:
            for server in pool["servers"]:
                reachable[(pool["name"], server["name"])] = tw.probe(server["address"], server["port"])
    return tw.health(report, proxy, reachable)
