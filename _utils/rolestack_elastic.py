"""
ElasticSearch's snapshots of the elastic role (docs/roles/elastic.md): pure logic and a small HTTP client on the
standard library, no Salt dunders.

The inventory's optional ``elastic`` key (:func:`validate`: every problem, each naming the key path, the value's
type and what was expected) sets the snapshot repository's name, the retention (how many good snapshots to keep),
the daily time of the scheduled snapshot and the URL of the local node. :func:`snapshots_pillar` turns it into each elastic
host's ``rolestack:elastic:snapshots`` (one repository per cluster, a directory of its own under the NFS mount of
the backup host's share; one member per cluster runs the timer).

The client (:class:`Client`) calls exactly these documented endpoints of ElasticSearch's snapshot API:

- ``GET /_snapshot/<repository>`` and ``PUT /_snapshot/<repository>`` (type ``fs``: ``location``, ``compress``)
- ``PUT /_snapshot/<repository>/<snapshot>?wait_for_completion=true|false``
- ``GET /_snapshot/<repository>/_all``
- ``DELETE /_snapshot/<repository>/<snapshot>``

Every failure is an :class:`ElasticError` of one line: the method and path, the HTTP status, ElasticSearch's
error type and reason (never credentials: the URL may not carry any). :func:`snapshot_name` dates a snapshot in UTC
and never gives a name twice; :func:`retention_plan` picks what a prune deletes (never a snapshot in progress,
never one newer than the oldest good snapshot kept, never one this platform did not name).
"""

import base64
import datetime
import http.client
import ipaddress
import json
import re
import ssl
import urllib.parse

import rolestack_systemd as systemd
from rolestack_inventory_schema import _check_mapping
from rolestack_inventory_schema import _fmt
from rolestack_inventory_schema import _kind

ELASTIC_KEYS = ("snapshot_repository", "snapshot_retention", "snapshot_time", "url", "username", "ca_file")
# the password of elastic.username (a cluster with security enabled): given to the elastic hosts only
PASSWORD_SECRET = "elastic_snapshot_password"
DEFAULT_REPOSITORY = "rolestack_backup"
DEFAULT_RETENTION = 14
RETENTION_RANGE = (1, 1000)
DEFAULT_TIME = "01:30"  # UTC
DEFAULT_URL = "http://127.0.0.1:9200"
# where the elastic hosts mount the backup host's NFS share (path.repo); each cluster writes below it, in a
# directory of its own: two clusters never write into one repository
MOUNT_PATH = "/mnt/elastic-snapshots"
PREFIX = "rolestack"
TIMER_UNIT = "rolestack-elastic-snapshot.timer"
SERVICE_UNIT = "rolestack-elastic-snapshot.service"
DESCRIPTION = "a dated ElasticSearch snapshot, then prune by retention"
TIMEOUT_S = 30
# a snapshot taken with wait_for_completion=true may take long: the request's own timeout
SNAPSHOT_TIMEOUT_S = 3600

# ElasticSearch's rules for repository and snapshot names, narrowed: lowercase letters, digits, _ - (and . for
# snapshots), not starting with _ - or .
REPOSITORY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SNAPSHOT_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,199}$")
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
PATH_RE = re.compile(r"^(/[A-Za-z0-9_.@+-]+)+$")
HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
# the names this platform gives: rolestack-2026.12.02-013000, then -1, -2... within the same second
NAME_FORMAT = "%Y.%m.%d-%H%M%S"
OURS_RE = re.compile(rf"^{PREFIX}-(\d{{4}}\.\d{{2}}\.\d{{2}}-\d{{6}})(?:-([1-9][0-9]*))?$")
IN_PROGRESS = "IN_PROGRESS"
SUCCESS = "SUCCESS"


class ElasticError(Exception):
    """A refused or failed request: one line, with the HTTP status and ElasticSearch's error type (if any)."""

    def __init__(self, message, status=None, error_type=None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


# -- the inventory's ``elastic`` key


def _check_url(path, value, err):
    if not isinstance(value, str):
        err(f"{path}: got {_kind(value)}, expected a URL such as {DEFAULT_URL!r}")
        return
    try:
        parsed = urllib.parse.urlsplit(value)
        port = parsed.port
    except ValueError:
        parsed, port = None, None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        err(f"{path}: got {_fmt(value)} ({_kind(value)}), expected an http:// or https:// URL such as {DEFAULT_URL!r}")
    elif parsed.username is not None or parsed.password is not None:
        # never echo it back: it carries a credential
        err(f"{path}: got a URL with credentials ({_kind(value)}), expected one without user or password")
    elif parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        err(f"{path}: got {_fmt(value)}, expected scheme, host and port only (no path, query or fragment)")
    elif not HOST_RE.match(parsed.hostname) and not _is_ip(parsed.hostname):
        err(f"{path}: got host {_fmt(parsed.hostname)}, expected a host name or an IP address")
    elif port is not None and not 1 <= port <= 65535:
        err(f"{path}: got port {port}, expected 1 to 65535")


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _matches(pattern):
    return lambda value: isinstance(value, str) and bool(pattern.match(value))


def _in_range(value):
    return not isinstance(value, bool) and isinstance(value, int) and RETENTION_RANGE[0] <= value <= RETENTION_RANGE[1]


# key -> (is it valid, what was expected)
CHECKS = {
    "snapshot_repository": (
        _matches(REPOSITORY_RE),
        "a repository name of lowercase letters, digits, _ and - (at most 64, not starting with _ or -) such as "
        f"{DEFAULT_REPOSITORY!r}",
    ),
    "snapshot_retention": (
        _in_range,
        f"an integer from {RETENTION_RANGE[0]} to {RETENTION_RANGE[1]} (how many good snapshots to keep)",
    ),
    "snapshot_time": (_matches(TIME_RE), f"a quoted time of day HH:MM in UTC such as {DEFAULT_TIME!r}"),
    "username": (_matches(USERNAME_RE), "a user name of letters, digits and _.@- (at most 64) such as 'snapshots'"),
    "ca_file": (
        lambda value: _matches(PATH_RE)(value) and ".." not in value.split("/"),
        "an absolute path to the CA certificate of the node's https, such as '/etc/elasticsearch/certs/http_ca.crt'",
    ),
}


def validate(inventory):
    """The inventory's ``elastic`` key: the list of every problem (each naming the key path)."""
    errors = []
    err = errors.append
    spec = _check_mapping("elastic", inventory.get("elastic"), ELASTIC_KEYS, err) or {}
    for key, (valid, expected) in CHECKS.items():
        if key in spec and not valid(spec[key]):
            err(f"elastic.{key}: got {_fmt(spec[key])} ({_kind(spec[key])}), expected {expected}")
    if "url" in spec:
        _check_url("elastic.url", spec["url"], err)
    secrets = inventory.get("secrets")
    has_password = isinstance(secrets, dict) and PASSWORD_SECRET in secrets  # its value: the schema's check
    if "username" in spec and not has_password:
        err(f"secrets.{PASSWORD_SECRET}: missing, expected the password of elastic.username (at least 16 characters)")
    if has_password and "username" not in spec:
        err(f"elastic.username: missing, expected the user whose password secrets.{PASSWORD_SECRET} is")
    return errors


def settings(inventory):
    """The ``elastic`` key of a valid inventory, with the defaults filled in."""
    spec = inventory.get("elastic") or {}
    return {
        "repository": spec.get("snapshot_repository", DEFAULT_REPOSITORY),
        "retention": spec.get("snapshot_retention", DEFAULT_RETENTION),
        "time": spec.get("snapshot_time", DEFAULT_TIME),
        "url": spec.get("url", DEFAULT_URL).rstrip("/"),
        "username": spec.get("username"),
        "ca_file": spec.get("ca_file"),
    }


def snapshots_pillar(inventory, cluster, members, host):
    """
    ``rolestack:elastic:snapshots`` of the elastic host ``host`` of ``cluster`` (``members``: the names of the
    cluster's hosts with an address): the repository (fs, compressed; its location the cluster's own directory
    under MOUNT_PATH), the retention, the URL, and ``scheduler``: true on one member per cluster, the first by
    name, which runs the timer (one scheduled snapshot a day per cluster), with the timer's and service's units.
    """
    spec = settings(inventory)
    return {
        "repository": spec["repository"],
        "location": f"{MOUNT_PATH}/{cluster}",
        "mount": MOUNT_PATH,
        "compress": True,
        "retention": spec["retention"],
        "url": spec["url"],
        "username": spec["username"],  # its password: secrets.elastic_snapshot_password
        "ca_file": spec["ca_file"],
        "scheduler": bool(members) and host == min(members),
        "on_calendar": on_calendar(spec["time"]),
        "timer_unit": TIMER_UNIT,
        "service_unit": SERVICE_UNIT,
        "timer": render_timer(spec["time"]),
        "service": render_service(),
    }


def on_calendar(time):
    """systemd's OnCalendar of a daily time in UTC."""
    return systemd.daily_utc(time)


def render_timer(time):
    """The timer of the scheduled snapshot: daily at ``time`` UTC; a run missed while the host was off runs at boot."""
    return systemd.timer_text(
        DESCRIPTION,
        [on_calendar(time)],
        "rolestack elastic role, states/elastic/snapshots.sls: edit the inventory's elastic key",
    )


def render_service():
    """The oneshot the timer starts (systemd never starts it twice at once: runs cannot overlap)."""
    return systemd.salt_call_service_text(
        DESCRIPTION,
        "rolestack_elastic.scheduled",
        "rolestack elastic role, states/elastic/snapshots.sls",
        after="network-online.target remote-fs.target",
    )


# -- names and retention


def snapshot_name(now, taken):
    """
    The name of a snapshot taken at ``now`` (an aware datetime, turned into UTC): ``rolestack-YYYY.MM.DD-HHMMSS``,
    or with ``-1``, ``-2``... when that name is in ``taken`` (names in the repository, or refused already).
    """
    if now.tzinfo is None:
        raise ValueError("now: expected an aware datetime (a naive one has no known time zone)")
    base = f"{PREFIX}-{now.astimezone(datetime.UTC).strftime(NAME_FORMAT)}"
    taken = set(taken)
    if base not in taken:
        return base
    suffix = 1
    while f"{base}-{suffix}" in taken:
        suffix += 1
    return f"{base}-{suffix}"


def is_ours(name):
    """Whether a snapshot's name is one :func:`snapshot_name` gives."""
    return isinstance(name, str) and bool(OURS_RE.match(name))


def _order(snapshot):
    """Newest first: by start time, then by name (the date and suffix in it)."""
    name = snapshot.get("snapshot", "")
    match = OURS_RE.match(name)
    suffix = int(match.group(2) or 0) if match else 0
    return (snapshot.get("start_time_in_millis") or 0, match.group(1) if match else name, suffix)


def retention_plan(snapshots, keep):
    """
    What a prune does with the repository's ``snapshots`` (GET _all's entries). Only the platform's own snapshots
    (named by :func:`snapshot_name`) are considered; the ``keep`` newest with state SUCCESS are kept. Deleted: the
    others that are older than the oldest one kept, unless in progress. Never deleted: a snapshot in progress (a
    DELETE would abort it), a failed or partial one newer than the oldest one kept (kept for a look; a later good
    snapshot ages it out), another's snapshot. Returns lists of names: keep, delete, in_progress, newer_not_good,
    others.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep: got {_fmt(keep)}, expected an integer of at least 1")
    ours = sorted((s for s in snapshots if is_ours(s.get("snapshot"))), key=_order, reverse=True)
    others = sorted(s.get("snapshot") for s in snapshots if not is_ours(s.get("snapshot")))
    kept = [s for s in ours if s.get("state") == SUCCESS][:keep]
    oldest_kept = _order(kept[-1]) if kept else None
    plan = {"keep": [], "delete": [], "in_progress": [], "newer_not_good": [], "others": others}
    kept_names = {s["snapshot"] for s in kept}
    for snapshot in ours:
        name = snapshot["snapshot"]
        if name in kept_names:
            plan["keep"].append(name)
        elif snapshot.get("state") == IN_PROGRESS:
            plan["in_progress"].append(name)
        elif oldest_kept is None or _order(snapshot) > oldest_kept:
            plan["newer_not_good"].append(name)
        else:
            plan["delete"].append(name)
    return plan


def summary(snapshot):
    """One snapshot of GET _all, in short: name, state, start and end (UTC, ISO 8601), shards."""
    shards = snapshot.get("shards") or {}
    return {
        "name": snapshot.get("snapshot"),
        "state": snapshot.get("state"),
        "start_time": snapshot.get("start_time"),
        "end_time": snapshot.get("end_time"),
        "indices": len(snapshot.get("indices") or []),
        "shards_failed": shards.get("failed", 0),
        "ours": is_ours(snapshot.get("snapshot") or ""),
    }


# -- the repository


def repository_body(location, compress=True):
    """The body of PUT /_snapshot/<repository>: a shared file system repository."""
    return {"type": "fs", "settings": {"location": location, "compress": bool(compress)}}


def _setting_text(value):
    """ElasticSearch keeps settings as strings: GET answers compress: "true" to a PUT of compress: true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def repository_changes(current, wanted):
    """
    What differs between the registered repository (GET's entry, or None when it is missing) and the wanted body:
    {} when nothing; else {"type": {"old", "new"}, "settings.<key>": {"old", "new"}...}. Settings the body does not
    name (set by hand, e.g. max_snapshot_bytes_per_sec) are not compared; a PUT would reset them.
    """
    if current is None:
        return {"repository": {"old": None, "new": wanted}}
    changes = {}
    if current.get("type") != wanted["type"]:
        changes["type"] = {"old": current.get("type"), "new": wanted["type"]}
    live = current.get("settings") or {}
    for key, value in wanted["settings"].items():
        old = live.get(key)
        if old is None or _setting_text(old) != _setting_text(value):
            changes[f"settings.{key}"] = {"old": old, "new": value}
    return changes


# -- the HTTP client


def check_repository_name(name):
    if not isinstance(name, str) or not REPOSITORY_RE.match(name):
        raise ElasticError(
            f"repository: got {_fmt(name)}, expected lowercase letters, digits, _ and - (not starting with _ or -)"
        )
    return name


def check_snapshot_name(name):
    if not isinstance(name, str) or not SNAPSHOT_RE.match(name):
        raise ElasticError(
            f"snapshot: got {_fmt(name)}, expected lowercase letters, digits, _ . and - (not starting with _ . or -)"
        )
    return name


def _one_line(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_message(method, path, status, body):
    """One line for a refused request: HTTP status, ElasticSearch's error type and reason."""
    error = body.get("error") if isinstance(body, dict) else None
    error_type = None
    if isinstance(error, dict):
        error_type = error.get("type")
        reason = error.get("reason") or ""
        root = error.get("root_cause")
        if isinstance(root, list) and root and isinstance(root[0], dict) and root[0].get("type") != error_type:
            reason += f" (root cause {root[0].get('type')}: {root[0].get('reason')})"
        what = f"{error_type}: {reason}"
    elif isinstance(error, str):  # e.g. "no handler found for uri [...] and method [...]"
        what = error
    else:
        what = f"{http.client.responses.get(status, 'unexpected answer')}: {_one_line(body, 120)}"
    return _one_line(f"ElasticSearch {method} {path}: HTTP {status} {what}", 500), error_type


class Client:
    """
    A client of the snapshot API of one node (``url``: scheme, host and port; https checks the certificate with
    the system's CAs, or ``cafile``; ``auth``: (user, password) sent as HTTP basic authentication, never shown).
    Each request opens its own connection.
    """

    def __init__(self, url, timeout=TIMEOUT_S, cafile=None, auth=None):
        errors = []
        _check_url("url", url, errors.append)
        if errors:
            raise ElasticError(errors[0])
        parsed = urllib.parse.urlsplit(url)
        self.url = f"{parsed.scheme}://{parsed.netloc}"
        self.scheme, self.host = parsed.scheme, parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 9200)
        self.timeout = timeout
        self.cafile = cafile
        self._authorization = None  # never in a message
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._authorization = f"Basic {token}"

    def _connection(self, timeout):
        if self.scheme == "https":
            context = ssl.create_default_context(cafile=self.cafile)
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, query=None, timeout=None):
        """(status, parsed JSON body); ElasticError for a failed connection or an answer of 400 or more."""
        target = path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = self._connection(timeout or self.timeout)
        try:
            connection.request(method, target, body=payload, headers=headers)
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise ElasticError(_one_line(f"ElasticSearch at {self.url}: {method} {path}: {reason}")) from None
        finally:
            connection.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = raw.decode(errors="replace")
        if status >= 400:
            message, error_type = error_message(method, path, status, parsed)
            raise ElasticError(message, status=status, error_type=error_type)
        if not isinstance(parsed, dict):
            raise ElasticError(_one_line(f"ElasticSearch {method} {path}: HTTP {status} but not a JSON object"))
        return status, parsed

    # the endpoints

    def get_repository(self, repository):
        """GET /_snapshot/<repository>: its entry ({type, settings}), or None when it is not registered."""
        path = f"/_snapshot/{check_repository_name(repository)}"
        try:
            _status, body = self.request("GET", path)
        except ElasticError as error:
            if error.status == 404 and error.error_type == "repository_missing_exception":
                return None
            raise
        return body.get(repository)

    def put_repository(self, repository, body):
        """PUT /_snapshot/<repository> (ElasticSearch verifies it: every node must reach the location)."""
        _status, answer = self.request("PUT", f"/_snapshot/{check_repository_name(repository)}", body=body)
        return answer

    def create_snapshot(self, repository, snapshot, wait=True):
        """PUT /_snapshot/<repository>/<snapshot>: the snapshot's info when waited for, else {"accepted": true}."""
        path = f"/_snapshot/{check_repository_name(repository)}/{check_snapshot_name(snapshot)}"
        query = {"wait_for_completion": "true" if wait else "false"}
        _status, answer = self.request("PUT", path, query=query, timeout=SNAPSHOT_TIMEOUT_S if wait else None)
        return answer

    def list_snapshots(self, repository):
        """GET /_snapshot/<repository>/_all: the snapshots' entries."""
        _status, answer = self.request("GET", f"/_snapshot/{check_repository_name(repository)}/_all")
        snapshots = answer.get("snapshots")
        if not isinstance(snapshots, list):
            raise ElasticError(f"ElasticSearch GET /_snapshot/{repository}/_all: no snapshots list in the answer")
        return snapshots

    def delete_snapshot(self, repository, snapshot):
        """DELETE /_snapshot/<repository>/<snapshot>."""
        path = f"/_snapshot/{check_repository_name(repository)}/{check_snapshot_name(snapshot)}"
        _status, answer = self.request("DELETE", path)
        return answer
