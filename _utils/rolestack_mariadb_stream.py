"""
The provisioning stream of ``mariadb_replication`` (pure logic and I/O, no Salt dunders): one mariabackup of a source
sent to a new replica over mutual TLS, and the local ways of copying (a pipe, mysqldump).

The wire: frames of a kind byte and a length (``FRAME``): H (source: accepted, after the client certificate and
name checks), R (replica: ready, its server is stopped and mbstream runs), D (backup data), E (source: the end, a
JSON trailer). Reading one side overlaps writing the other (``Overlap``). What a peer may ask of the source
(``stream_peer``), the names a client certificate carries, the mariabackup/mbstream/mysqldump commands and their
option files live here too; the execution module passes in what it reads from Salt (the minion id, the pillar's
peers, the minion configuration, ``publish.publish``).
"""

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import pwd
import queue
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

import rolestack_gtid as gtid
import rolestack_mariadb_sql as sql
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

# The db role's backup stream: the files states/db/certs.sls writes and the role's port. A call through salt's
# peer publish always gets these (and binds to this host's pillar address, rolestack:host:address): a peer
# chooses none of them. A minion's own configuration may move them (``mariadb_replication.backup_stream``, a
# dict with these keys, in the minion config file: the functional tests use it); a caller cannot.
ROLE_STREAM = {
    "port": 4444,
    "ssl_ca": "/etc/mysql/ssl/ca.pem",
    "ssl_cert": "/etc/mysql/ssl/server.pem",
    "ssl_key": "/etc/mysql/ssl/server.key",
}
# seconds serve_backup_stream waits for the replica to connect (default, cap); seconds either side of the stream
# waits for progress before it gives up (default, cap): the source then kills mariabackup, which releases its
# locks; seconds the source waits, after the handshake, for the replica's "ready" (it stops its server meanwhile)
STREAM_TIMEOUT, MAX_STREAM_TIMEOUT = 600, 900
IDLE_TIMEOUT, MAX_IDLE_TIMEOUT = 60, 600
READY_WAIT = 300
# what a caller through peer publish may pass to serve_backup_stream; anything else is refused
PEER_STREAM_ARGS = ("allow", "timeout", "idle_timeout")

FRAME = struct.Struct(">cI")
# data frames of up to 4 MiB, through 1 MiB pipes: fewer wake-ups on 2 busy cores
CHUNK = 4 << 20
PIPE_SIZE = 1 << 20
# a frame goes out in slices of this size: the idle timeout then bounds each slice, not a whole 4 MiB frame
SLICE = 256 << 10
# where mariabackup writes the binary log position of the backup (10.11: xtrabackup_*, 11.x: mariadb_backup_*)
BINLOG_INFO_FILES = ("mariadb_backup_binlog_info", "xtrabackup_binlog_info")


def option_value(value):
    """A value for a my.cnf-style option file, double-quoted and escaped."""
    text = str(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise SaltInvocationError("option values cannot contain newlines")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def option_file(sections):
    """An option file: ``{"client": {"user": "root", ...}}``; None values are left out."""
    lines = []
    for group, options in sections.items():
        lines.append(f"[{group}]")
        for key, value in options.items():
            if value is None:
                continue
            lines.append(key if value is True else f"{key}={option_value(value)}")
    return "\n".join(lines) + "\n"


def binlog_gtid(text):
    """The GTID position from a mariabackup binlog info file (``file<TAB>pos<TAB>gtid``)."""
    fields = text.strip().split("\t")
    if len(fields) < 2:
        raise CommandExecutionError(f"unexpected content of the backup's binlog info: {text.strip()!r}")
    position = fields[2].strip() if len(fields) > 2 else ""
    gtid.parse(position)
    return position


class Overlap(threading.Thread):
    """
    Runs ``step`` in its own thread, a bounded queue between it and the caller, so that reading one side of
    the backup stream overlaps writing the other (pipes and sockets release the GIL). A producer's ``step()``
    returns a chunk (``b""`` at the end); a consumer's ``step(chunk)`` takes one. The thread's error is raised to the caller.
    """

    def __init__(self, step, produce):
        super().__init__(daemon=True)
        self.step, self.produce, self.error = step, produce, None
        self.chunks = queue.Queue(maxsize=4)

    def run(self):
        try:
            if self.produce:
                while chunk := self.step():
                    self.chunks.put(chunk)
            else:
                while (chunk := self.chunks.get()) is not None:
                    self.step(chunk)
        except (OSError, ValueError) as err:
            self.error = err
            if not self.produce:
                while self.chunks.get() is not None:  # unblock a caller still putting, until its end mark
                    pass
        finally:
            if self.produce:
                self.chunks.put(b"")

    def put(self, chunk):
        if self.error is not None:
            raise self.error
        self.chunks.put(chunk)

    def next(self, timeout):
        """A producer's next chunk (``b""`` at its end), waited for at most ``timeout`` s (else queue.Empty)."""
        chunk = self.chunks.get(timeout=timeout)
        if not chunk and self.error is not None:
            raise self.error
        return chunk

    def __iter__(self):
        while chunk := self.chunks.get():
            yield chunk
        if self.error is not None:
            raise self.error

    def finish_quietly(self):
        with contextlib.suppress(OSError, ValueError):
            self.finish()

    def finish(self):
        if not self.produce:
            self.chunks.put(None)
        self.join()
        if self.error is not None:
            raise self.error


def widen_pipe(stream):
    """Grow a pipe's buffer to PIPE_SIZE (best effort: the kernel may cap it)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


def client_options(settings):
    """Option-file lines for a client connecting like the PyMySQL ``settings``."""
    password = settings.get("password")
    options = {"user": settings.get("user"), "password": password.decode("utf-8") if password else None}
    if "unix_socket" in settings:
        options["socket"] = settings["unix_socket"]
    else:
        options.update(host=settings["host"], port=settings["port"])
        options.update({name.replace("_", "-"): settings.get(name) for name in ("ssl_ca", "ssl_cert", "ssl_key")})
        if settings.get("ssl_verify_identity"):
            options["ssl-verify-server-cert"] = True
    return options


def write_private(directory, name, text):
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def tail(path, size=2000):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


def backup_command(defaults_file, workdir):
    binary = shutil.which("mariabackup") or shutil.which("mariadb-backup")
    if not binary:
        raise CommandExecutionError("mariabackup is not installed (Debian package mariadb-backup)")
    return [binary, f"--defaults-file={defaults_file}", "--backup", "--stream=mbstream", f"--target-dir={workdir}"]


def extract_command(datadir):
    binary = shutil.which("mbstream")
    if not binary:
        raise CommandExecutionError("mbstream is not installed (Debian package mariadb-backup)")
    return [binary, "-x", "-C", datadir]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise CommandExecutionError(f"timed out after {timeout}s waiting for {what}")


def chown_tree(path, owner):
    entry = pwd.getpwnam(owner)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def local_backup_into(datadir, source_settings, timeout):
    """mariabackup of a source on this host piped into ``mbstream -x`` (no network)."""
    with tempfile.TemporaryDirectory(prefix="rolestack-backup-") as work:
        defaults = write_private(work, "backup.cnf", option_file({"mariabackup": client_options(source_settings)}))
        target = os.path.join(work, "target")
        os.mkdir(target)
        pipe(
            work,
            ("mariabackup", backup_command(defaults, target)),
            ("mbstream -x", extract_command(datadir)),
            timeout,
            "the backup",
        )


def pipe(work, producer, consumer, timeout, what):
    """Run producer | consumer (each a (label, argv)); CommandExecutionError with the failing side's stderr."""
    logs = [os.path.join(work, f"pipe-{index}.err") for index in (0, 1)]
    with open(logs[0], "wb") as producer_log, open(logs[1], "wb") as consumer_log:
        first = subprocess.Popen(producer[1], stdout=subprocess.PIPE, stderr=producer_log)
        second = subprocess.Popen(consumer[1], stdin=first.stdout, stderr=consumer_log)
        first.stdout.close()
        try:
            second.wait(timeout)
            first.wait(timeout)
        except subprocess.TimeoutExpired:
            first.kill()
            second.kill()
            raise CommandExecutionError(f"{what} took longer than {timeout}s") from None
    for (label, _argv), process, log in ((producer, first, logs[0]), (consumer, second, logs[1])):
        if process.returncode:
            raise CommandExecutionError(f"{label} failed ({process.returncode}): {tail(log)}")


def read_exact(conn, view, size):
    """Fill ``view[:size]`` from the connection; returns that part of the view."""
    got = 0
    while got < size:
        count = conn.recv_into(view[got:size])
        if not count:
            raise CommandExecutionError("the backup stream ended early (did the source fail?)")
        got += count
    return view[:size]


def read_frame(conn, limit=CHUNK):
    """One frame: (kind, payload as a memoryview)."""
    kind, size = FRAME.unpack(read_exact(conn, memoryview(bytearray(FRAME.size)), FRAME.size))
    if size > limit:
        raise CommandExecutionError(f"a backup stream frame of {size} bytes (at most {limit})")
    return kind, read_exact(conn, memoryview(bytearray(size)), size)


def send_frame(conn, kind, payload=b""):
    """One frame, sent in slices of SLICE bytes (each bounded by the socket's timeout)."""
    conn.sendall(FRAME.pack(kind, len(payload)))
    view = memoryview(payload)
    for start in range(0, len(view), SLICE):
        conn.sendall(view[start : start + SLICE])


def open_stream(host, port, ssl_ca, ssl_cert, ssl_key, wait, publishing=None):
    """
    Connect to serve_backup_stream at ``host:port`` (retrying for ``wait`` seconds while nothing listens, and
    only while ``publishing``, the peer publish that starts it, is under way), complete TLS (the source's
    certificate verified against ``ssl_ca`` and ``host``) and read the source's hello (it accepted this replica's
    certificate and address). Changes nothing on this host: a failure here leaves the server as it was.
    """
    context = ssl.create_default_context(cafile=ssl_ca)
    context.load_cert_chain(ssl_cert, ssl_key)
    where = f"{host}:{port}"
    deadline = time.monotonic() + wait
    while True:
        if publishing is not None and not publishing.is_alive():
            raise CommandExecutionError(
                f"{publishing.minion} did not serve a backup stream: {publishing.describe()} (before this replica "
                f"could connect to {where})"
            )
        try:
            raw = socket.create_connection((host, port), timeout=10)
            break
        except OSError as err:
            if time.monotonic() >= deadline:
                raise CommandExecutionError(f"cannot reach the backup stream at {where} within {wait:g}s: {err}")
            time.sleep(0.5)
    try:
        conn = context.wrap_socket(raw, server_hostname=host)
    except (ssl.SSLError, OSError) as err:
        raw.close()
        raise CommandExecutionError(f"TLS with the backup stream at {where} failed: {err}")
    try:
        conn.settimeout(30)
        kind, _ = read_frame(conn, limit=4096)
        if kind != b"H":
            raise CommandExecutionError(f"unexpected frame {kind!r} instead of the source's hello")
    except (CommandExecutionError, OSError, ValueError) as err:
        conn.close()
        raise CommandExecutionError(
            f"the backup stream at {where} did not accept this replica (its client certificate, or the name or "
            f"address in it, refused?): {err}"
        )
    return conn


def stream_backup_into(datadir, conn, where, idle_timeout):
    """
    Receive one backup over ``conn`` (from open_stream) and extract it with ``mbstream -x``: says ready, then
    reads until the source's trailer, failing when the source sends nothing for ``idle_timeout`` seconds.
    Returns the trailer (``ok``, ``gtid``, ``bytes``).
    """
    with tempfile.TemporaryDirectory(prefix="rolestack-restore-") as work:
        err_extract = os.path.join(work, "extract.err")
        with conn, open(err_extract, "wb") as extract_log:
            conn.settimeout(idle_timeout)
            extract = subprocess.Popen(extract_command(datadir), stdin=subprocess.PIPE, stderr=extract_log, bufsize=0)
            widen_pipe(extract.stdin)
            received, trailer = 0, None
            header = memoryview(bytearray(FRAME.size))
            writer = Overlap(extract.stdin.write, produce=False)
            writer.start()
            try:
                send_frame(conn, b"R")
                while trailer is None:
                    kind, size = FRAME.unpack(read_exact(conn, header, FRAME.size))
                    if size > CHUNK:
                        raise CommandExecutionError(f"a backup stream frame of {size} bytes (at most {CHUNK})")
                    payload = read_exact(conn, memoryview(bytearray(size)), size)
                    if kind == b"D":
                        writer.put(payload)
                        received += size
                    elif kind == b"E":
                        trailer = json.loads(bytes(payload))
                    else:
                        raise CommandExecutionError(f"unexpected frame {kind!r} in the backup stream")
                writer.finish()
            except TimeoutError:
                raise CommandExecutionError(
                    f"the backup stream from {where} stalled: nothing for {idle_timeout:g}s (idle_timeout)"
                ) from None
            except (OSError, ssl.SSLError) as err:
                raise CommandExecutionError(f"the backup stream from {where} broke: {err}")
            finally:
                if writer.is_alive():
                    writer.finish_quietly()
                with contextlib.suppress(OSError):
                    extract.stdin.close()
                try:
                    extract.wait(60)
                except subprocess.TimeoutExpired:
                    extract.kill()
                    extract.wait()
        if not isinstance(trailer, dict) or not trailer.get("ok"):
            error = trailer.get("error") if isinstance(trailer, dict) else f"a trailer of type {type(trailer).__name__}"
            raise CommandExecutionError(f"the source's backup failed: {error}")
        if trailer.get("bytes") != received:
            raise CommandExecutionError(f"received {received} bytes, the source says it sent {trailer.get('bytes')}")
        if extract.returncode:
            raise CommandExecutionError(f"mbstream -x failed ({extract.returncode}): {tail(err_extract)}")
    log.info("received a %d byte backup from %s", received, where)
    return trailer


def prepare(datadir, timeout):
    binary = shutil.which("mariabackup") or shutil.which("mariadb-backup")
    result = subprocess.run(
        [binary, "--prepare", f"--target-dir={datadir}", "--use-memory=256M"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode:
        raise CommandExecutionError(f"mariabackup --prepare failed ({result.returncode}): {result.stderr[-2000:]}")


def backup_gtid(datadir):
    for name in BINLOG_INFO_FILES:
        path = os.path.join(datadir, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                return binlog_gtid(handle.read())
    raise CommandExecutionError(
        "the backup holds no binary log position (is log_bin on on the source?): cannot start replication"
    )


def seconds(value, name, default, cap):
    """A number of seconds in (0, cap]; ``default`` when None."""
    if value is None:
        return float(default)
    if isinstance(value, bool):
        raise SaltInvocationError(f"{name} must be a number of seconds, not a bool")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"{name} must be a number of seconds, not a {type(value).__name__}") from None
    if not 0 < number <= cap:
        raise SaltInvocationError(f"{name} must be more than 0 and at most {cap} seconds (its cap), not {number:g}")
    return number


def peer_named(peers, minion_id):
    if not isinstance(minion_id, str) or not isinstance(peers, list):
        return None
    for peer in peers:
        if isinstance(peer, dict) and peer.get("name") == minion_id and peer.get("address"):
            return peer
    return None


def stream_peer(caller, given, peers, host):
    """
    Check a call of serve_backup_stream through peer publish: ``caller`` (salt's ``__pub_id``, the
    authenticated minion id of the caller) must be a db peer (``peers``: ``rolestack:db:peers``) other than this
    host (``host``: ``rolestack:host``); of the arguments it passed (``given``: name -> value, None left out)
    only PEER_STREAM_ARGS are allowed, and ``allow`` only as that peer's address. Returns the peer.
    """
    refused = sorted(name for name in given if name not in PEER_STREAM_ARGS)
    if refused:
        raise SaltInvocationError(
            f"serve_backup_stream through peer publish (caller {caller}): {', '.join(refused)} refused; a peer "
            f"passes only {', '.join(PEER_STREAM_ARGS)} (the CA, certificate, key, port and bind address are the db "
            "role's own)"
        )
    peer = peer_named(peers, caller)
    if peer is None:
        raise SaltInvocationError(
            f"serve_backup_stream through peer publish: the caller {caller!r} is not a db peer of this host "
            "(rolestack:db:peers names, inventory host names): refused"
        )
    if caller == host.get("name"):
        raise SaltInvocationError(f"serve_backup_stream through peer publish: {caller} cannot stream to itself")
    if "allow" in given:
        try:
            same = plain_ip(str(given["allow"])) == plain_ip(str(peer["address"]))
        except ValueError:
            same = False
        if not same:
            raise SaltInvocationError(
                f"serve_backup_stream through peer publish: allow (a {type(given['allow']).__name__}) is not the "
                f"caller {caller}'s address {peer['address']} (rolestack:db:peers): refused"
            )
    return peer


def name_key(value):
    """A certificate or pillar name as compared: an address normalised, a DNS name lower-cased."""
    text = str(value).strip()
    try:
        return str(plain_ip(text))
    except ValueError:
        return text.lower().rstrip(".")


def certificate_names(cert):
    """The names in a verified peer certificate (``SSLSocket.getpeercert()``): CNs, DNS and IP subjectAltNames."""
    names = set()
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(name_key(value))
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind in ("DNS", "IP Address"):
            names.add(name_key(value))
    return names


def certificate_names_peer(cert, peer):
    """Whether the certificate names ``peer`` (its CN or a subjectAltName is its name, fqdn or address)."""
    wanted = {name_key(peer[key]) for key in ("name", "fqdn", "address") if peer.get(key)}
    return bool(certificate_names(cert) & wanted)


def accept_replica(listener, context, allow, allowed, expect, timeout):
    """
    The first connection from an ``allowed`` address that completes TLS with a client certificate signed by
    the CA and, with ``expect`` (a peer), naming it. Others are closed and counted; CommandExecutionError
    after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    refused = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommandExecutionError(
                f"no connection from {allow} within {timeout:g}s" + (f" (refused {refused})" if refused else "")
            )
        listener.settimeout(remaining)
        try:
            raw, peer = listener.accept()
        except TimeoutError:
            continue
        address = str(plain_ip(peer[0]))
        if address not in allowed:
            log.warning("serve_backup_stream: refused a connection from %s (only %s)", address, allow)
            refused.append(address)
            raw.close()
            continue
        raw.settimeout(min(30.0, max(1.0, remaining)))
        try:
            conn = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as err:
            log.warning("serve_backup_stream: TLS with %s failed: %s", address, err)
            refused.append(address)
            raw.close()
            continue
        if expect is not None and not certificate_names_peer(conn.getpeercert(), expect):
            log.warning(
                "serve_backup_stream: %s's client certificate names %s, not %s",
                address,
                sorted(certificate_names(conn.getpeercert())),
                expect["name"],
            )
            refused.append(address)
            conn.close()
            continue
        return conn, address


def plain_ip(address):
    """An address as ipaddress, IPv4-mapped IPv6 addresses as IPv4."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def send_backup(conn, settings, idle_timeout):
    """
    Stream mariabackup's output as D frames, then the E trailer. No progress for ``idle_timeout`` seconds on
    either side (the replica stopped reading, mariabackup stopped writing) kills mariabackup: its connection
    to the server ends and with it every lock it held.
    """
    with tempfile.TemporaryDirectory(prefix="rolestack-backup-") as work:
        defaults = write_private(work, "backup.cnf", option_file({"mariabackup": client_options(settings)}))
        target = os.path.join(work, "target")
        os.mkdir(target)
        err_path = os.path.join(work, "backup.err")
        sent = 0
        conn.settimeout(idle_timeout)
        with open(err_path, "wb") as err_log:
            backup = subprocess.Popen(backup_command(defaults, target), stdout=subprocess.PIPE, stderr=err_log)
            widen_pipe(backup.stdout)
            reader = Overlap(lambda: backup.stdout.read(CHUNK), produce=True)
            reader.start()
            try:
                while True:
                    try:
                        chunk = reader.next(idle_timeout)
                    except queue.Empty:
                        raise CommandExecutionError(
                            f"mariabackup wrote nothing for {idle_timeout:g}s (idle_timeout): killed"
                        ) from None
                    if not chunk:
                        break
                    send_frame(conn, b"D", chunk)
                    sent += len(chunk)
                reader.finish()
                backup.wait(idle_timeout)
            except (OSError, ssl.SSLError, subprocess.TimeoutExpired, CommandExecutionError) as err:
                backup.kill()
                backup.wait()
                with contextlib.suppress(OSError, ValueError):
                    for _ in reader:  # to its end mark: the reading thread must not stay blocked on a full queue
                        pass
                if isinstance(err, CommandExecutionError):
                    raise
                if isinstance(err, TimeoutError):
                    raise CommandExecutionError(
                        f"the replica stopped reading: no progress for {idle_timeout:g}s (idle_timeout), "
                        "mariabackup killed"
                    ) from None
                if isinstance(err, subprocess.TimeoutExpired):
                    raise CommandExecutionError(f"mariabackup did not exit within {idle_timeout:g}s: killed") from None
                raise CommandExecutionError(f"the replica went away during the backup: {err}")
        messages = tail(err_path, 200000)
        match = re.search(r"GTID of the last change '([^']*)'", messages)
        gtid = match.group(1) if match else None
        trailer = {"ok": backup.returncode == 0, "gtid": gtid, "bytes": sent}
        if backup.returncode:
            trailer["error"] = f"mariabackup exited with {backup.returncode}: {messages[-1500:]}"
        with contextlib.suppress(OSError, ssl.SSLError):
            send_frame(conn, b"E", json.dumps(trailer).encode())
            conn.settimeout(30)
            conn.unwrap()
    if backup.returncode:
        raise CommandExecutionError(trailer["error"])
    return sent, gtid


def publish_disagrees(answer, minion, trailer):
    """
    Why the source's publish answer does not confirm the stream this replica received (its ``trailer``; None:
    any answer that is a result), or None when it does. An empty answer never confirms anything.
    """
    if not isinstance(answer, dict) or not answer.get(minion):
        what = "no answer" if not answer else f"an answer without {minion} ({type(answer).__name__})"
        return (
            f"{what} to the peer publish of mariadb_replication.serve_backup_stream (does the master's peer "
            f"configuration let this host call it on {minion}? is {minion} up?)"
        )
    got = answer[minion]
    if not isinstance(got, dict):
        return f"{minion} answered: {str(got)[:1000]}"
    for key in ("bytes", "gtid") if trailer is not None else ():
        if got.get(key) != trailer.get(key):
            return f"{minion} answered {key} {got.get(key)!r}, the stream's trailer said {trailer.get(key)!r}"
    return None


def check_datadir(datadir, overwrite_fresh):
    """
    Refuse a data directory holding data. Returns True when it holds a fresh installation that is to be
    moved aside (only with ``overwrite_fresh``), False when it is absent or empty.
    """
    if not os.path.isdir(datadir) or not os.listdir(datadir):
        return False
    entries = os.listdir(datadir)
    databases = [
        entry
        for entry in entries
        if os.path.isdir(os.path.join(datadir, entry))
        and not entry.startswith("#")
        and entry not in sql.SYSTEM_DATABASES
    ]
    if databases:
        raise CommandExecutionError(f"{datadir} holds databases {sorted(databases)}: refusing to provision over data")
    if any(entry == "master.info" or entry.startswith("master-") for entry in entries):
        raise CommandExecutionError(f"{datadir} belongs to a replica already (master.info): refusing")
    if not overwrite_fresh:
        raise CommandExecutionError(
            f"{datadir} is not empty (a fresh installation?): pass overwrite_fresh=True to move it aside"
        )
    return True
