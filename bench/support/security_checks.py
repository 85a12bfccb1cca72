"""
The hostile battery of issue 9, run against a lab: each check tries what an attacker (an accepted minion that
is not a db host, a db host asking for more than it needs, an unknown minion id) or a tired operator (a typo in
a secret, a second writable db host) would, and says whether the platform held.

    check(target) -> (ok, detail)

``target`` is a ``rolestack_lab.Lab`` or anything with a ``.lab`` attribute holding one (the e2e tier's
LabHandle). ``CHECKS`` lists every check in the order ``bench/security`` runs them; ``run_all`` runs them.

Each check cleans up what it started (a listener it provoked is killed, a commit it made is reverted, a
temporary key is removed), so the lab is left as it was. Waits are bounded; nothing is sent outside the lab's
namespaces (every command runs in a lab host or in the salt host's namespace).
"""

import contextlib
import fnmatch
import json
import re
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import rolestack_lab  # noqa: E402
import security_backup  # noqa: E402
import security_kv  # noqa: E402
import security_salt  # noqa: E402
import security_ssh  # noqa: E402

STREAM = "mariadb_replication.serve_backup_stream"
SIGN = "x509.sign_remote_certificate"
# who may use each function the master lets minions publish (peer) or run (peer_run): issue 9, item 1
PEER_FOR = {SIGN: "db", STREAM: "db"}
PEER_RUN_FOR = {}  # no minion needs a runner: the CA matches its policies' exact minion ids itself
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
SSL = "/etc/mysql/ssl"
# secrets a host without these roles must never hold (issue 9, item 4); db_users are checked per user
DB_ONLY_SECRETS = ("replication_password", "db_admin_password")
HOSTILE_PORT = 4455
# salt 3008 masks pillar values in output unless asked (pillar.items unmask=True)
MASKED = "**********"
PUBLISH_WAIT = 5  # seconds a publish waits for answers (the listener watch runs that long)


# ---------------------------------------------------------------------------------------------------- the lab


class Probe:
    """What the checks read from a lab: its hosts by role, the committed inventory, salt from the master."""

    def __init__(self, target):
        self.lab = getattr(target, "lab", target)
        self.inventory = yaml.safe_load((self.lab.pillar_repo / "inventory.yaml").read_text())
        self.zone = f"{self.inventory['level']}.{self.inventory['domain']}"
        self.salt_host = self.lab.salt_host

    # hosts ------------------------------------------------------------------------------------------
    @property
    def hosts(self):
        return sorted(self.lab.hosts)

    def roles(self, host):
        return set(self.lab.hosts[host]["roles"])

    def with_role(self, role):
        return [host for host in self.hosts if role in self.roles(host)]

    def address(self, host):
        return self.lab.hosts[host]["address"]

    @property
    def masterdb(self):
        """The host the committed inventory calls masterdb (the source a replica asks for a stream)."""
        for name, spec in self.inventory["hosts"].items():
            roles = (spec or {}).get("roles") or rolestack_lab.rolestack_inventory.roles_from_name(name)[0]
            if "masterdb" in roles and name in self.lab.hosts:
                return name
        raise rolestack_lab.LabError("no masterdb host in the lab's inventory")

    @property
    def replica(self):
        return next(host for host in self.with_role("db") if host != self.masterdb)

    @property
    def app_host(self):
        """A host with no privileged role (no db, salt or backup): app1 in the small lab."""
        plain = [host for host in self.hosts if not self.roles(host) & {"db", "salt", "backup"}]
        return "app1" if "app1" in plain else plain[0]

    # salt -------------------------------------------------------------------------------------------
    def salt(self, *args, timeout=120):
        """The salt CLI on the master, JSON: {minion: return} ({} when nothing answered)."""
        proc = rolestack_lab.salt_cmd(self.lab, "--out=json", "--static", "-t", str(timeout), *args, check=False,
                                      timeout=timeout + 60)  # fmt: skip
        return _json(proc.stdout, {})

    def run(self, *args, timeout=120):
        proc = rolestack_lab.salt_run(self.lab, "--out=json", *args, check=False, timeout=timeout)
        return _json(proc.stdout, None)

    def call(self, host, *args, timeout=120):
        """salt-call inside ``host`` (as a process on that host would): its return, or the raw output."""
        proc = self.sh(host, rolestack_lab.VENV / "bin/salt-call", "--out=json", *args, timeout=timeout)
        ret = _json(proc.stdout, None)
        return ret["local"] if isinstance(ret, dict) and "local" in ret else (proc.stdout + proc.stderr)

    def publish(self, host, target, fun, args, timeout=PUBLISH_WAIT):
        """publish.publish from ``host``'s minion: what a minion gets back when it asks ``target`` to run ``fun``."""
        return self.call(host, "publish.publish", target, fun, f"arg={json.dumps(args)}", f"timeout={timeout}",
                         timeout=timeout + 90)  # fmt: skip

    def sh(self, host, *cmd, timeout=120, input=None):
        return rolestack_lab.in_host(self.lab, host, *cmd, check=False, timeout=timeout, input=input)

    def master_config(self):
        """
        The master's configuration as salt reads it (/etc/salt/master.d/*.conf of the salt host, defaults), its
        paths (MASTER_PATHS) seen from the machine: the master runs inside the salt host's container.
        """
        import salt.config

        opts = salt.config.master_config(str(self.lab.master_dir / "master"))
        for key in MASTER_PATHS:
            if isinstance(opts.get(key), str) and opts[key].startswith("/"):
                opts[key] = str(self.lab.salt_host_path(opts[key]))
        return opts

    def sql(self, host, statement):
        proc = self.sh(host, "mariadb", "--batch", "--skip-column-names", "-e", statement)
        if proc.returncode:
            raise rolestack_lab.LabError(f"{host}: {statement}: {proc.stderr.strip()[:300]}")
        return proc.stdout.strip()

    def listeners(self, host):
        """TCP listening sockets of ``host`` as 'address:port' strings."""
        proc = self.sh(host, "ss", "-ltnH")
        return {line.split()[3] for line in proc.stdout.splitlines() if len(line.split()) >= 4}

    # the pillar repository --------------------------------------------------------------------------
    def git(self, *args):
        """git in the lab's pillar clone; a revert is pushed to the master (a refused push raises LabError)."""
        if args[0] == "revert":
            rolestack_lab.pull_pillar(self.lab)
        cmd = ["git", "-C", str(self.lab.pillar_repo), "-c", "user.name=security battery",
               "-c", "user.email=security@rolestack.invalid", *args]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        if args[0] == "revert":
            self.push()
        return out

    def push(self, check=True):
        """The clone's main pushed to the master's pillar repository (inside the salt host, through its hooks)."""
        proc = rolestack_lab.push_pillar(self.lab)
        if check and proc.returncode:
            raise rolestack_lab.LabError(f"git push to the master refused: {proc.stderr.strip()[-500:]}")
        return proc

    def commit(self, files, message, check=True):
        """
        Commit ``{relative path: text or None (remove)}`` to the lab's pillar clone (brought to the master's main
        first) and push it; the push's CompletedProcess (``check``: a refused push raises LabError).
        """
        rolestack_lab.pull_pillar(self.lab)
        for name, text in files.items():
            path = self.lab.pillar_repo / name
            if text is None:
                self.git("rm", "-q", name)
            else:
                path.write_text(text)
                self.git("add", name)
        self.git("commit", "-q", "-m", message)
        return self.push(check=check)

    def revert_last(self):
        self.git("revert", "--no-edit", "HEAD")

    def secret_values(self):
        """{secret path: value} of the committed inventory (db_users.<user> one by one)."""
        found = {}
        for name, value in (self.inventory.get("secrets") or {}).items():
            if isinstance(value, dict):
                found.update({f"db_users.{user}": str(password) for user, password in value.items()})
            else:
                found[name] = str(value)
        return found


# options of the master's configuration naming a path of the salt host (Probe.master_config)
MASTER_PATHS = ("pki_dir", "cachedir", "extension_modules", "log_file", "sock_dir", "autosign_file",
                "autosign_grains_dir", "token_dir", "pidfile")  # fmt: skip


def _json(text, default):
    try:
        return json.loads(text or "")
    except ValueError:
        return default


def _paths_of(needle, data, path=""):
    """Key paths in ``data`` whose value contains the string ``needle``."""
    if isinstance(data, dict):
        return [found for key, value in data.items() for found in _paths_of(needle, value, f"{path}:{key}")]
    if isinstance(data, list):
        return [found for index, value in enumerate(data) for found in _paths_of(needle, value, f"{path}[{index}]")]
    return [path.lstrip(":") or "<top>"] if needle in str(data) else []


# ---------------------------------------------------------------------------------------------------- streams


def _watch_publish(probe, caller, watched, arg_sets, hostile_ports=None, grace=2.0):
    """
    Publish ``serve_backup_stream(args)`` for each of ``arg_sets`` at once from ``caller`` to ``watched`` while
    watching ``watched``'s listening sockets (until the publishes return, and ``grace`` seconds more); then stop
    what they started there. Returns (publish answers, new listeners seen). With ``hostile_ports`` only
    listeners on those ports count.
    """
    before = probe.listeners(watched)
    seen = set()
    with ThreadPoolExecutor(max_workers=len(arg_sets)) as pool:
        futures = [pool.submit(probe.publish, caller, watched, STREAM, args) for args in arg_sets]
        try:
            until = None
            while until is None or time.monotonic() < until:
                seen |= {sock for sock in probe.listeners(watched) - before
                         if not hostile_ports or _port(sock) in hostile_ports}  # fmt: skip
                if until is None and all(future.done() for future in futures):
                    until = time.monotonic() + grace
                time.sleep(0.3)
        finally:
            stop_listeners(probe, watched, probe.listeners(watched) - before)
        answers = [future.result() for future in futures]
    return answers, seen


def _port(sock):
    return int(sock.rsplit(":", 1)[1])


def stop_listeners(probe, host, sockets, timeout=20):
    """
    Stop the processes listening on ``sockets`` in ``host`` (the stream jobs a check provoked: SIGTERM to the
    PIDs ``ss`` names for exactly these sockets), then every serve_backup_stream job still running there; wait
    (bounded) until the sockets are closed.
    """
    if not sockets:
        return
    ports = {_port(sock) for sock in sockets}
    pids = set()
    for line in probe.sh(host, "ss", "-ltnpH").stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3] in sockets:
            pids |= {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
    if pids:
        probe.sh(host, "kill", *map(str, sorted(pids)))
    deadline = time.monotonic() + timeout
    while {_port(sock) for sock in probe.listeners(host)} & ports:
        if time.monotonic() > deadline:
            raise rolestack_lab.LabError(f"{host} still listens on {sorted(ports)} after the check")
        running = probe.salt(host, "saltutil.running", timeout=20).get(host)
        for job in running or []:
            if isinstance(job, dict) and job.get("fun") == STREAM:
                probe.salt(host, "saltutil.kill_job", job["jid"], timeout=20)
        time.sleep(0.5)


def _got_something(ret):
    """A publish answer that is not 'nothing' (an empty mapping, or a publish timeout)."""
    return bool(ret) and not (isinstance(ret, str) and ret.endswith("publish timed out"))


def check_app_host_cannot_ask_for_a_stream(target):
    """(a) an app host asks masterdb to stream a backup to itself, verified against the system CA bundle."""
    probe = Probe(target)
    app, source = probe.app_host, probe.masterdb
    hostile = [
        [HOSTILE_PORT, probe.address(app), f"{SSL}/server.pem", f"{SSL}/server.key", SYSTEM_CA],
        [f"port={HOSTILE_PORT + 1}", f"allow={probe.address(app)}", f"ssl_cert={SSL}/server.pem",
         f"ssl_key={SSL}/server.key", f"ssl_ca={SYSTEM_CA}", "bind=0.0.0.0", "timeout=86400"],
    ]  # fmt: skip
    answers, opened = _watch_publish(probe, app, source, hostile)
    problems = [f"{source} opened {sorted(opened)} for {app}"] if opened else []
    problems += [f"{app}'s publish got an answer: {str(ret)[:200]}" for ret in answers if _got_something(ret)]
    return not problems, "; ".join(problems) or f"{app} got nothing and {source} opened no listener"


def check_replica_cannot_divert_a_stream(target):
    """(c) a db host asks masterdb for a stream to another host's address: refused, no listener."""
    probe = Probe(target)
    replica, source, other = probe.replica, probe.masterdb, probe.app_host
    args = [HOSTILE_PORT, probe.address(other), f"{SSL}/server.pem", f"{SSL}/server.key", f"{SSL}/ca.pem"]
    (ret,), opened = _watch_publish(probe, replica, source, [args])
    streamed = isinstance(ret, dict) and isinstance(ret.get(source), dict)
    problems = [f"{source} opened {sorted(opened)} for {other}"] if opened else []
    if streamed:
        problems.append(f"{source} served the stream: {ret[source]}")
    return not problems, "; ".join(problems) or f"{source} refused {replica}'s stream to {other} ({str(ret)[:160]})"


def check_stream_settings_are_not_the_callers(target):
    """(c) a db host asks for its own stream on a port, bind address and CA of its choosing: they are ignored."""
    probe = Probe(target)
    replica, source = probe.replica, probe.masterdb
    args = [f"port={HOSTILE_PORT}", f"allow={probe.address(replica)}", f"ssl_cert={SSL}/server.pem",
            f"ssl_key={SSL}/server.key", f"ssl_ca={SYSTEM_CA}", "bind=0.0.0.0", "timeout=86400"]  # fmt: skip
    _answers, opened = _watch_publish(probe, replica, source, [args], hostile_ports={HOSTILE_PORT})
    if opened:
        return False, f"{source} listened where {replica} asked ({sorted(opened)}), with the CA it named"
    return True, f"{source} ignored the caller's port {HOSTILE_PORT}, bind and CA"


# ---------------------------------------------------------------------------------------------------- the CA


def check_app_host_cannot_publish_to_the_ca(target):
    """(b) an app host publishes x509.sign_remote_certificate to the salt host: it gets nothing."""
    probe = Probe(target)
    app, ca = probe.app_host, probe.salt_host
    ret = probe.publish(app, ca, SIGN, ["rolestack_db_server", {"CN": f"{app}.{probe.zone}"}, True])
    if _got_something(ret):
        return False, f"{app}'s publish reached the CA: {str(ret)[:240]}"
    return True, f"{app} got nothing ({ret!r})"


def _policies(probe):
    ca = probe.salt_host
    policies = probe.salt(ca, "pillar.get", "x509_signing_policies", timeout=30).get(ca)
    return sorted(policies) if isinstance(policies, dict) and policies else ["rolestack_db_server",
                                                                           "rolestack_db_client"]  # fmt: skip


def _request_certificate(probe, host, policy, names, key):
    """
    x509.create_certificate on ``host`` asking the CA to sign ``names`` (the CN first; an address goes in the
    subjectAltName as IP:) under ``policy``, as db.certs asks. Returns (PEM or None, the answer as text).
    """
    san = ",".join(f"IP:{name}" if re.fullmatch(r"[\d.]+", name) else f"DNS:{name}" for name in names)
    for _attempt in range(2):
        ret = probe.salt(host, "x509.create_certificate", f"ca_server={probe.salt_host}", f"signing_policy={policy}",
                         f"CN={names[0]}", f"subjectAltName={san}", f"private_key={key}", timeout=150).get(host)  # fmt: skip
        text = ret if isinstance(ret, str) else json.dumps(ret)
        match = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text or "", re.S)
        if match or not _unanswered(ret, text):
            break
    return (match.group(0).replace("\\n", "\n") if match else None), text


def _unanswered(ret, text):
    """
    No verdict at all: the host did not return in time, or its publish to the CA got no answer (x509's
    "ca_server did not respond"). On a busy 2-core machine that is load, not a refusal: asked once more.
    """
    return ret is None or "did not respond" in (text or "")


def _names_in(pem):
    """The names a certificate is good for: its CN, its DNS and IP subjectAltNames."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.encode())
    names = {attr.value for attr in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)}
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= set(san.get_values_for_type(x509.DNSName))
        names |= {str(address) for address in san.get_values_for_type(x509.IPAddress)}
    return names


def check_ca_signs_only_a_hosts_own_names(target):
    """(i) the CA refuses an app host any certificate, and a replica one naming masterdb, under every policy."""
    probe = Probe(target)
    app, replica, source = probe.app_host, probe.replica, probe.masterdb
    key = "/root/rolestack-security-check.key"
    own = [f"{replica}.{probe.zone}", replica, probe.address(replica)]
    requests, policies = [], _policies(probe)
    for policy in policies:
        requests.append((app, policy, [f"{app}.{probe.zone}", app, probe.address(app)]))
        requests.append((replica, policy, [f"{source}.{probe.zone}", source, f"masterdb.{probe.zone}",
                                           probe.address(source)]))  # fmt: skip
        # the control: the replica's own names (some policy signs them, or the refusals above prove nothing)
        requests.append((replica, policy, own))
    problems = []
    try:
        for host in (app, replica):
            probe.sh(host, "openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
        # each request waits for the CA's answer (a publish)
        # a few at a time: fifteen at once kept a 2-core CI machine's CA past the publish timeout
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda req: _request_certificate(probe, *req, key), requests))
    finally:
        for host in (app, replica):
            probe.sh(host, "rm", "-f", key)
    controls = []
    for (host, policy, names), (pem, text) in zip(requests, answers, strict=True):
        if names is own:
            controls.append((pem is not None and set(own[:2]) <= _names_in(pem)) or f"{policy}: {text[:160]}")
        elif pem is not None and host == app:
            problems.append(f"{app} got a certificate under {policy} ({sorted(_names_in(pem))})")
        elif pem is not None and _names_in(pem) & set(names):
            problems.append(f"{replica} got a certificate naming {sorted(_names_in(pem) & set(names))} under {policy}")
    if True not in controls:
        problems.append(f"the control failed: no policy signs {replica}'s own names ({'; '.join(map(str, controls))})")
    hostile = len(requests) - len(controls)
    return not problems, "; ".join(problems) or f"{hostile} hostile requests under {policies}: none signed"


# ---------------------------------------------------------------------------------------------------- the master


def _hostile_ids(probe):
    """Minion ids that are not inventory names but look like them (salt2, db22, db2.<zone>, xdb2, ...)."""
    ids = set()
    for host in probe.hosts:
        ids |= {f"{host}2", f"{host}x", f"x{host}", f"{host}.{probe.zone}", f"{host}-evil", f"{host}.evil"}
    return ids - set(probe.hosts)


def _too_wide(pattern, name):
    """Names like ``name`` (longer, or with the dot as any character) that a function pattern also matches."""
    return [other for other in (f"{name}x", name.replace(".", "X"), f"{name}.evil") if _safe_match(pattern, other)]


def _acl_problems(probe, acl, wanted, label):
    """Problems of one ACL (peer or peer_run): {minion regex: [function pattern | {target: [patterns]}]}."""
    problems, granted = [], {fun: set() for fun in wanted}
    hostile = _hostile_ids(probe)
    for key, perms in (acl or {}).items():
        matched = {minion for minion in probe.hosts if _safe_match(key, minion)}
        bad_ids = sorted(minion for minion in hostile if _safe_match(key, minion))
        if bad_ids:
            problems.append(f"{label} key {key!r} also matches {', '.join(bad_ids[:4])}")
        patterns = []
        for perm in perms if isinstance(perms, list) else [perms]:
            if isinstance(perm, dict):
                for tgt, funs in perm.items():
                    if not _target_anchored(tgt, probe, hostile):
                        problems.append(f"{label} key {key!r}: target {tgt!r} also matches ids outside the inventory")
                    patterns += funs if isinstance(funs, list) else list(funs or [])
            else:
                patterns.append(perm)
        for pattern in patterns:
            pattern = next(iter(pattern)) if isinstance(pattern, dict) else pattern
            funs = [fun for fun in wanted if _safe_match(pattern, fun)]
            if not funs:
                problems.append(f"{label} key {key!r} grants {pattern!r}, which no role needs")
            for fun in funs:
                if _too_wide(pattern, fun):
                    problems.append(f"{label} key {key!r}: function pattern {pattern!r} also matches "
                                    f"{_too_wide(pattern, fun)[0]!r} (not anchored)")  # fmt: skip
                granted[fun] |= matched
                extra = sorted(minion for minion in matched if wanted[fun] not in probe.roles(minion))
                if extra:
                    problems.append(f"{label} key {key!r} grants {fun} to {', '.join(extra)} (not role {wanted[fun]})")
    for fun, role in wanted.items():
        missing = sorted(set(probe.with_role(role)) - granted[fun])
        if missing:
            problems.append(f"{label}: {fun} not granted to {', '.join(missing)} (role {role} needs it)")
    return problems


def _safe_match(pattern, text):
    try:
        return re.match(str(pattern), text) is not None
    except re.error:
        return False


def _target_anchored(tgt, probe, hostile):
    """A peer target restriction (glob, L@list, E@regex) that matches no look-alike id; other forms: not judged."""
    tgt = str(tgt)
    if tgt.startswith("L@"):
        return not set(tgt[2:].split(",")) & hostile
    if tgt.startswith("E@"):
        return not any(_safe_match(tgt[2:], name) for name in hostile)
    if "@" in tgt or " " in tgt:
        return True
    return not any(fnmatch.fnmatch(name, tgt) for name in hostile)


def check_peer_acl_is_exact(target):
    """(d) the master's peer and peer_run keys and functions are anchored and grant each function to its role only."""
    probe = Probe(target)
    opts = probe.master_config()
    problems = _acl_problems(probe, opts.get("peer"), PEER_FOR, "peer")
    problems += _acl_problems(probe, opts.get("peer_run"), PEER_RUN_FOR, "peer_run")
    return not problems, "; ".join(problems) or f"peer {opts.get('peer')} peer_run {opts.get('peer_run')}"


def check_master_accepts_no_key_unasked(target):
    """The master never accepts a key by itself: no auto_accept, no open_mode, no wildcard autosign_file."""
    probe = Probe(target)
    opts = probe.master_config()
    problems = [f"{key}: True" for key in ("auto_accept", "open_mode") if opts.get(key)]
    if opts.get("autosign_file"):
        with contextlib.suppress(OSError):
            lines = Path(opts["autosign_file"]).read_text().split()
            problems += [f"autosign_file accepts {line!r}" for line in lines if set(line) & set("*?[]")]
    return not problems, "; ".join(problems) or "keys are accepted only by the operator (or a per-host token)"


KEY_PROBE_ID = "zz-security-key-probe"
KEY_STATES = ("minions", "minions_pre", "minions_rejected", "minions_denied")


def _key_state(opts, minion_id):
    """Where the master holds ``minion_id``'s key (minions = accepted), or None."""
    return next((state for state in KEY_STATES if (Path(opts["pki_dir"]) / state / minion_id).exists()), None)


def _forget_key(opts, minion_id):
    for state in KEY_STATES:
        (Path(opts["pki_dir"]) / state / minion_id).unlink(missing_ok=True)


def _plant_pending_key(opts, minion_id):
    """A new key pending for ``minion_id``, as if a VM had just presented it. Returns its path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    path = Path(opts["pki_dir"]) / "minions_pre" / minion_id
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def check_keys_are_admitted_by_sha256_fingerprint(target):
    """
    A key pending for a new id is not accepted by ``minion_key.admit`` without a fingerprint, nor with an md5
    one (sha256 only); the control: with its sha256 fingerprint it is.
    """
    import salt.utils.crypt

    probe = Probe(target)
    opts = probe.master_config()
    problems = []
    try:
        path = _plant_pending_key(opts, KEY_PROBE_ID)
        for what, hash_type in (("without a fingerprint", None), ("with its md5 fingerprint", "md5")):
            finger = (
                [f"fingerprint={salt.utils.crypt.pem_finger(path=str(path), sum_type=hash_type)}"] if hash_type else []
            )
            answer = probe.run("minion_key.admit", KEY_PROBE_ID, *finger, "timeout=0")
            if _key_state(opts, KEY_PROBE_ID) == "minions":
                problems.append(f"the pending key of {KEY_PROBE_ID} was accepted {what} ({str(answer)[:120]})")
                _forget_key(opts, KEY_PROBE_ID)
                path = _plant_pending_key(opts, KEY_PROBE_ID)
        sha256 = salt.utils.crypt.pem_finger(path=str(path), sum_type="sha256")
        answer = probe.run("minion_key.admit", KEY_PROBE_ID, f"fingerprint={sha256}", "timeout=0")
        if _key_state(opts, KEY_PROBE_ID) != "minions":
            problems.append(f"the control failed: not accepted with its sha256 fingerprint ({str(answer)[:200]})")
    finally:
        _forget_key(opts, KEY_PROBE_ID)
    return not problems, "; ".join(problems) or "admitted with its sha256 fingerprint only"


# ---------------------------------------------------------------------------------------------------- secrets


def _user_roles(probe):
    users = {}
    for database in (probe.inventory.get("databases") or {}).values():
        for user, spec in ((database or {}).get("users") or {}).items():
            users.setdefault(user, set()).update((spec or {}).get("roles") or [])
    return users


def check_secrets_only_where_used(target):
    """(e) a host without db/salt/backup roles holds no db secret, no rsync secret, no other host's db password."""
    probe = Probe(target)
    values, users = probe.secret_values(), _user_roles(probe)
    plain = [host for host in probe.hosts if not probe.roles(host) & {"db", "salt", "backup"}]
    pillars = probe.salt("-L", ",".join(plain), "pillar.items", "unmask=True", timeout=60)
    problems = []
    for host in plain:
        pillar = pillars.get(host)
        if not isinstance(pillar, dict) or MASKED in json.dumps(pillar):
            problems.append(f"{host}: no readable pillar ({str(pillar)[:120]})")
            continue
        forbidden = [*DB_ONLY_SECRETS, "rsync_backup_secret"]
        forbidden += [f"db_users.{user}" for user, roles in users.items() if not roles & probe.roles(host)]
        for name in forbidden:
            if name in values and _paths_of(values[name], pillar):
                problems.append(f"{host} holds {name} at {', '.join(_paths_of(values[name], pillar)[:3])}")
    return not problems, "; ".join(problems) or f"{', '.join(plain)}: only the secrets their roles use"


def check_other_ids_get_the_common_pillar(target):
    """(e) an FQDN or look-alike minion id gets the common pillar: no secret, no signing policy, no host's data."""
    probe = Probe(target)
    ids = [f"{host}.{probe.zone}" for host in [*probe.with_role("db"), probe.salt_host]]
    ids += [f"{probe.salt_host}2", f"{probe.replica}2"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        pillars = dict(zip(ids, pool.map(lambda name: probe.run("pillar.show_pillar", name), ids), strict=True))
    common = probe.run("pillar.show_pillar", "zz-security-unknown-id")
    values = probe.secret_values()
    problems = []
    for name, pillar in pillars.items():
        leaked = sorted(secret for secret, value in values.items() if _paths_of(value, pillar))
        if leaked:
            problems.append(f"{name} gets {', '.join(leaked)}")
        if "x509_signing_policies" in json.dumps(pillar):
            problems.append(f"{name} gets the CA's signing policies")
        if not leaked and pillar != common:
            problems.append(f"{name} gets another pillar than an unknown id")
    return not problems, "; ".join(problems) or f"{', '.join(ids)}: the common pillar"


def _bad_secret_edits(text, sentinel):
    """Inventory texts with a bad secret carrying ``sentinel``: validation errors, two kinds of YAML error."""
    lines = text.splitlines()
    repl = next((i for i, line in enumerate(lines) if re.match(r"\s+replication_password:", line)), None)
    if repl is None:
        raise rolestack_lab.LabError("no secrets.replication_password line in the lab's inventory")
    indent = lines[repl][: len(lines[repl]) - len(lines[repl].lstrip())]

    def edited(new, extra=None):
        copy = list(lines)
        copy[repl] = indent + new
        if extra:
            copy[extra[0]] = extra[1]
        return "\n".join(copy) + "\n"

    # the first password under secrets.db_users (a second too-short secret in the same commit)
    users = next((i for i, line in enumerate(lines) if line.strip() == "db_users:"), None)
    user = None
    if users is not None and users + 1 < len(lines) and ":" in lines[users + 1]:
        name, _, _ = lines[users + 1].partition(":")
        user = (users + 1, f"{name}: {sentinel}u")
    return {
        "too-short values": edited(f"replication_password: {sentinel}", user),
        "a YAML error on the secret's line": edited(f"replication_password: {sentinel}-0123456789: typo"),
        "an unclosed quote": edited(f'replication_password: "{sentinel}-0123456789'),
    }


def check_secret_errors_hide_values(target):
    """(f) a bad secret committed to the pillar repo: its value shows in no minion's pillar, no log."""
    probe = Probe(target)
    sentinel = f"zq{secrets.token_hex(5)}"
    original = (probe.lab.pillar_repo / "inventory.yaml").read_text()
    log_file = Path(probe.master_config().get("log_file") or probe.lab.master_dir / "master.log")
    problems = []
    for what, text in _bad_secret_edits(original, sentinel).items():
        pushed = probe.commit({"inventory.yaml": text}, f"security battery: {what} under secrets", check=False)
        if pushed.returncode:
            # refused by the master's pre-receive hook: its message must not show the value either
            probe.git("reset", "-q", "--hard", "HEAD~1")
            if sentinel in pushed.stdout + pushed.stderr:
                problems.append(f"{what}: the value is in the refused push's message")
            elif "does not validate" not in pushed.stderr:
                problems.append(f"{what}: the push was refused, not by the validator: {pushed.stderr.strip()[-200:]}")
            continue
        try:
            returns = probe.salt("*", "pillar.items", "unmask=True", timeout=60)
            where = sorted(host for host, pillar in returns.items() if sentinel in json.dumps(pillar))
            if where:
                problems.append(f"{what}: the value is in the pillar of {', '.join(where)}")
                break  # the hole is shown: the other kinds of error need not be tried
            if MASKED in json.dumps(returns) or not any("_errors" in json.dumps(ret) for ret in returns.values()):
                problems.append(f"{what}: no minion's pillar reports an error (the commit was not seen)")
        finally:
            probe.revert_last()
    if log_file.exists() and sentinel in log_file.read_text(errors="replace"):
        problems.append(f"the value is in the master log {log_file}")
    for host in probe.hosts:
        if probe.sh(host, "grep", "-rqsF", sentinel, "/var/log/salt").returncode == 0:
            problems.append(f"the value is in {host}'s /var/log/salt")
    return not problems, "; ".join(problems) or "3 bad secrets committed: the value shows nowhere"


# ---------------------------------------------------------------------------------------------------- tokens


def enrollment_tokens(probe):
    """{token: owner host or None (shared)}: from the lab's record and the master's autosign_grains_dir."""
    tokens = {}

    def walk(data, owner, under_token):
        # a string under a key naming a token (at any depth: {"enroll_tokens": {"db2": ...}}); the host whose
        # key it is under is its owner
        if isinstance(data, dict):
            for key, value in data.items():
                host = key if owner is None and key in probe.lab.hosts else owner
                walk(value, host, under_token or "token" in str(key).lower())
        elif under_token and isinstance(data, str) and len(data) >= 8:
            tokens[data] = owner

    walk(probe.lab.state, None, False)
    # the master's, or where salt looks when it names none (/etc/salt/autosign_grains of the salt host)
    grains_dir = probe.master_config().get("autosign_grains_dir") or probe.lab.salt_host_path(
        "/etc/salt/autosign_grains"
    )
    if Path(grains_dir).is_dir():
        for path in Path(grains_dir).iterdir():
            for line in path.read_text().split():
                tokens.setdefault(line, None)
    return tokens


MASTER_AUTOSIGN_DIR = "/etc/salt/autosign_grains"
TOKEN_PLACES = ["/etc", "/root", "/srv", "/tmp", "/home", "/var/cache/salt", "/var/log/salt", "/run/salt"]


def token_files(probe, host, tokens):
    """{path: (mode, [tokens])} of files in ``host`` holding any of ``tokens``."""
    if not tokens:
        return {}
    patterns = [arg for token in tokens for arg in ("-e", token)]
    # (/root/.pyenv: the machine's Python, bind-mounted read-only into every host)
    proc = probe.sh(host, "grep", "-rHoFs", "--devices=skip", "--exclude-dir=.pyenv", *patterns, *TOKEN_PLACES)
    found = {}
    for line in proc.stdout.splitlines():
        path, _, token = line.rpartition(":")
        found.setdefault(path, set()).add(token)
    if not found:
        return {}
    modes = probe.sh(host, "stat", "-L", "-c", "%a %n", *found).stdout.splitlines()
    mode_of = {line.split(" ", 1)[1]: int(line.split(" ", 1)[0], 8) for line in modes if " " in line}
    return {path: (mode_of.get(path, 0o777), sorted(found[path])) for path in found}


def check_enrollment_tokens_are_private(target):
    """(g) no group/world-readable enrollment token in any host, no host holding another host's token."""
    probe = Probe(target)
    tokens = enrollment_tokens(probe)
    problems, holders, readable = [], {}, []
    with ThreadPoolExecutor(max_workers=4) as pool:
        files = dict(
            zip(probe.hosts, pool.map(lambda host: token_files(probe, host, tokens), probe.hosts), strict=True)
        )
    for host in probe.hosts:
        for path, (mode, found) in files[host].items():
            if host == probe.salt_host and path.startswith(MASTER_AUTOSIGN_DIR + "/"):
                continue  # the master's own list of the tokens it accepts (enrollment_tokens read it)
            if mode & 0o077:
                readable.append(f"{host}:{path} ({mode:04o})")
            for token in found:
                holders.setdefault(token, set()).add(host)
                if tokens[token] not in (None, host):
                    problems.append(f"{host}:{path} holds {tokens[token]}'s token")
    shared = sorted(sorted(hosts) for token, hosts in holders.items() if tokens[token] is None and len(hosts) > 1)
    problems += [f"one token on {len(hosts)} hosts ({', '.join(hosts)})" for hosts in shared]
    if readable:
        problems.append(f"token files readable by group or world: {', '.join(readable)}")
    return not problems, "; ".join(problems) or f"{len(tokens)} token(s) known: each private to its host"


# ---------------------------------------------------------------------------------------------------- db hosts


def check_one_writable_db_host(target):
    """(h) exactly one db host has read_only OFF, and it replicates from nobody."""
    probe = Probe(target)
    writable, problems = [], []
    for host in probe.with_role("db"):
        if probe.sql(host, "SELECT @@global.read_only") == "0":
            writable.append(host)
            if probe.sql(host, "SHOW ALL SLAVES STATUS"):
                problems.append(f"{host} is writable and has a replication source configured")
    if len(writable) != 1:
        problems.insert(0, f"{len(writable)} writable db hosts: {', '.join(writable) or 'none'}")
    return not problems, "; ".join(problems) or f"{writable[0]} only"


def check_replication_accounts_only_for_db_hosts(target):
    """repl@<address> accounts on masterdb exist only for the addresses of the inventory's db hosts."""
    probe = Probe(target)
    hosts = set(probe.sql(probe.masterdb, "SELECT Host FROM mysql.user WHERE User = 'repl'").split())
    allowed = {probe.address(host) for host in probe.with_role("db")}
    stale = sorted(hosts - allowed)
    return not stale, (f"repl@{', repl@'.join(stale)} on {probe.masterdb}" if stale else f"repl@ {sorted(hosts)}")


# ---------------------------------------------------------------------------------------------------- the battery

CHECKS = {
    "peer_acl_is_exact": check_peer_acl_is_exact,
    "master_accepts_no_key_unasked": check_master_accepts_no_key_unasked,
    "keys_are_admitted_by_sha256_fingerprint": check_keys_are_admitted_by_sha256_fingerprint,
    "app_host_cannot_ask_for_a_stream": check_app_host_cannot_ask_for_a_stream,
    "app_host_cannot_publish_to_the_ca": check_app_host_cannot_publish_to_the_ca,
    "replica_cannot_divert_a_stream": check_replica_cannot_divert_a_stream,
    "stream_settings_are_not_the_callers": check_stream_settings_are_not_the_callers,
    "ca_signs_only_a_hosts_own_names": check_ca_signs_only_a_hosts_own_names,
    "secrets_only_where_used": check_secrets_only_where_used,
    "other_ids_get_the_common_pillar": check_other_ids_get_the_common_pillar,
    "secret_errors_hide_values": check_secret_errors_hide_values,
    "enrollment_tokens_are_private": check_enrollment_tokens_are_private,
    "one_writable_db_host": check_one_writable_db_host,
    "replication_accounts_only_for_db_hosts": check_replication_accounts_only_for_db_hosts,
    **security_kv.CHECKS,  # the key-value stores (issue 11)
    **security_salt.CHECKS,  # the salt host's services (issue 12)
    **security_ssh.CHECKS,  # the jump box: sshd only from the salt host (issue 12)
    **security_backup.CHECKS,  # the backup sources' daemons and the NFS share (issue 13)
}


def run_check(name, target):
    """(ok, detail) of one check; an exception is a failure that names it."""
    try:
        ok, detail = CHECKS[name](target)
    except (rolestack_lab.LabError, subprocess.SubprocessError, OSError, ValueError, KeyError) as err:
        return False, f"the check could not run: {type(err).__name__}: {str(err)[:400]}"
    return bool(ok), " ".join(str(detail).split())


def run_all(target, names=None, report=None):
    """{name: (ok, detail)} for ``names`` (default: every check); ``report(name, ok, detail)`` after each."""
    results = {}
    for name in names or CHECKS:
        results[name] = run_check(name, target)
        if report:
            report(name, *results[name])
    return results
