"""
A stand-in of ElasticSearch's snapshot API for the tests (ElasticSearch cannot be installed here): a threading
http.server on 127.0.0.1 and a free port, implementing ONLY the ``_snapshot`` endpoints rolestack's client calls,
with ElasticSearch's documented answers and error bodies:

- ``GET /_snapshot/<repo>``: ``{<repo>: {"type", "settings"}}`` (settings as strings, as ElasticSearch keeps
  them), or 404 ``repository_missing_exception``
- ``PUT /_snapshot/<repo>``: type ``fs`` only; ``settings.location`` must be inside one of ``path_repo`` (else
  500 ``repository_exception``, as a node whose path.repo lacks it answers); the directory is created and an
  ``index.latest`` written, as the fs repository does; ``{"acknowledged": true}``
- ``PUT /_snapshot/<repo>/<snapshot>?wait_for_completion=``: 400 ``invalid_snapshot_name_exception`` for a name
  already in the repository (or not lowercase), 404 ``repository_missing_exception``; writes ``snap-<uuid>.dat``
  and ``meta-<uuid>.dat`` into the location and rewrites ``index-N``/``index.latest``; ``{"snapshot": {...}}`` when
  waited for, else ``{"accepted": true}``
- ``GET /_snapshot/<repo>/_all`` (or ``*``): ``{"snapshots": [...], "total", "remaining"}``
- ``DELETE /_snapshot/<repo>/<snapshot>``: 404 ``snapshot_missing_exception``; removes its files

Anything else: 400 ``no handler found for uri [...] and method [...]`` (a string ``error``, as ElasticSearch answers).
With ``users`` set, a request without the right HTTP basic credentials gets 401 ``security_exception`` (the reasons
ElasticSearch gives). What was NOT reproduced: shards, indices' data, cluster state, concurrency limits, repository
verification on several nodes, TLS, roles and privileges. ``requests`` logs every (method, path, query) for the tests; ``hold = True`` leaves new
snapshots IN_PROGRESS; ``hidden`` holds names that a PUT refuses as taken but GET _all does not show (a snapshot
another client is starting at that moment).
"""

import base64
import datetime
import http.server
import json
import os
import pathlib
import threading
import urllib.parse
import uuid


def _error(status, error_type, reason):
    cause = {"type": error_type, "reason": reason}
    return status, {"error": {"root_cause": [cause], **cause}, "status": status}


class ElasticStandin:
    def __init__(self, path_repo):
        self.path_repo = [os.path.realpath(path) for path in path_repo]
        self.repositories = {}  # name -> {"type", "settings" (strings)}
        self.snapshots = {}  # repo -> {name: info}
        self.generations = {}  # repo -> the generation of its index-N
        self.requests = []
        self.hold = False
        self.hidden = set()
        self.users = {}  # user -> password: when set, every request needs HTTP basic authentication
        self.lock = threading.Lock()
        self.server = None

    # -- lifecycle

    def start(self):
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = standin.handle(self.command, self.path, raw, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- test helpers

    def add_snapshot(self, repo, name, state="SUCCESS", start_ms=None):
        """A snapshot already in the repository (another tool's, a failed one, one in progress)."""
        with self.lock:
            return self._create(repo, name, state, start_ms)

    def writes(self):
        """The requests that changed something (PUT, DELETE)."""
        return [r for r in self.requests if r[0] in ("PUT", "DELETE")]

    # -- the endpoints

    def handle(self, method, target, raw, authorization=None):
        parsed = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        self.requests.append((method, parsed.path, query))
        if self.users:
            refused = self._authenticate(parsed.path, authorization)
            if refused:
                return refused
        parts = [urllib.parse.unquote(p) for p in parsed.path.strip("/").split("/")]
        with self.lock:
            if parts[0] == "_snapshot" and len(parts) == 2 and method in ("GET", "PUT"):
                return self._repository(method, parts[1], raw)
            if parts[0] == "_snapshot" and len(parts) == 3 and method == "GET" and parts[2] in ("_all", "*"):
                return self._list(parts[1])
            if parts[0] == "_snapshot" and len(parts) == 3 and method == "PUT":
                return self._put_snapshot(parts[1], parts[2], query)
            if parts[0] == "_snapshot" and len(parts) == 3 and method == "DELETE":
                return self._delete(parts[1], parts[2])
        return 400, {"error": f"no handler found for uri [{target}] and method [{method}]"}

    def _authenticate(self, path, authorization):
        """None when the basic credentials are a user's; else the 401 security_exception ElasticSearch answers."""
        if not authorization or not authorization.startswith("Basic "):
            return _error(401, "security_exception", f"missing authentication credentials for REST request [{path}]")
        user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        if self.users.get(user) != password:
            return _error(401, "security_exception", f"unable to authenticate user [{user}] for REST request [{path}]")
        return None

    def _repository(self, method, repo, raw):
        if method == "GET":
            if repo not in self.repositories:
                return _error(404, "repository_missing_exception", f"[{repo}] missing")
            return 200, {repo: self.repositories[repo]}
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "parse_exception", "request body is required")
        if body.get("type") != "fs":
            return _error(500, "repository_exception", f"[{repo}] repository type [{body.get('type')}] does not exist")
        settings = body.get("settings") or {}
        location = settings.get("location")
        if not location:
            return _error(500, "repository_exception", f"[{repo}] missing location")
        real = os.path.realpath(location)
        if not any(real == root or real.startswith(root.rstrip("/") + "/") for root in self.path_repo):
            why = "because this setting is empty" if not self.path_repo else f"{self.path_repo}"
            return _error(
                500,
                "repository_exception",
                f"[{repo}] location [{location}] doesn't match any of the locations specified by path.repo {why}",
            )
        os.makedirs(real, exist_ok=True)
        self.repositories[repo] = {
            "type": "fs",
            "settings": {
                key: json.dumps(value) if isinstance(value, bool) else str(value) for key, value in settings.items()
            },
        }
        self.snapshots.setdefault(repo, {})
        self._write_index(repo)
        return 200, {"acknowledged": True}

    def _location(self, repo):
        return pathlib.Path(self.repositories[repo]["settings"]["location"])

    def _write_index(self, repo):
        location = self._location(repo)
        generation = self.generations[repo] = self.generations.get(repo, -1) + 1
        names = sorted(self.snapshots[repo])
        for old in location.glob("index-*"):
            old.unlink()
        (location / f"index-{generation}").write_text(json.dumps({"snapshots": names}))
        (location / "index.latest").write_bytes(generation.to_bytes(8, "big"))

    def _create(self, repo, name, state, start_ms):
        start = start_ms if start_ms is not None else int(datetime.datetime.now(datetime.UTC).timestamp() * 1000)
        info = {
            "snapshot": name,
            "uuid": uuid.uuid4().hex[:22],
            "repository": repo,
            "version_id": 8150099,
            "version": "8.15.0",
            "indices": [],
            "data_streams": [],
            "include_global_state": True,
            "state": state,
            "start_time": _iso(start),
            "start_time_in_millis": start,
            "failures": [],
            "shards": {"total": 0, "failed": 0, "successful": 0},
        }
        if state != "IN_PROGRESS":
            info.update(end_time=_iso(start + 1000), end_time_in_millis=start + 1000, duration_in_millis=1000)
        location = self._location(repo)
        (location / f"snap-{info['uuid']}.dat").write_text(json.dumps(info))
        (location / f"meta-{info['uuid']}.dat").write_text(json.dumps({"cluster_uuid": "standin"}))
        self.snapshots[repo][name] = info
        self._write_index(repo)
        return info

    def _put_snapshot(self, repo, name, query):
        if repo not in self.repositories:
            return _error(404, "repository_missing_exception", f"[{repo}] missing")
        if name in self.snapshots[repo] or name in self.hidden:
            return _error(
                400,
                "invalid_snapshot_name_exception",
                f"[{repo}:{name}] Invalid snapshot name [{name}], snapshot with the same name already exists",
            )
        if name != name.lower():
            return _error(
                400,
                "invalid_snapshot_name_exception",
                f"[{repo}:{name}] Invalid snapshot name [{name}], must be lowercase",
            )
        info = self._create(repo, name, "IN_PROGRESS" if self.hold else "SUCCESS", None)
        if query.get("wait_for_completion") == "true":
            return 200, {"snapshot": info}
        return 200, {"accepted": True}

    def _list(self, repo):
        if repo not in self.repositories:
            return _error(404, "repository_missing_exception", f"[{repo}] missing")
        found = sorted(self.snapshots[repo].values(), key=lambda s: (s["start_time_in_millis"], s["snapshot"]))
        return 200, {"snapshots": found, "total": len(found), "remaining": 0}

    def _delete(self, repo, name):
        if repo not in self.repositories:
            return _error(404, "repository_missing_exception", f"[{repo}] missing")
        info = self.snapshots[repo].pop(name, None)
        if info is None:
            return _error(404, "snapshot_missing_exception", f"[{repo}:{name}] is missing")
        location = self._location(repo)
        for kind in ("snap", "meta"):
            (location / f"{kind}-{info['uuid']}.dat").unlink(missing_ok=True)
        self._write_index(repo)
        return 200, {"acknowledged": True}


def _iso(millis):
    moment = datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
