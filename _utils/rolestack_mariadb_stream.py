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
import dataclasses
import fcntl
import ipaddress
import json
import logging
import os
import queue
import re
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

import rolestack_mariadb_backup as backup
import rolestack_mariadb_server as server
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
            extract = subprocess.Popen(
                backup.extract_command(datadir), stdin=subprocess.PIPE, stderr=extract_log, bufsize=0
            )
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
            raise CommandExecutionError(f"mbstream -x failed ({extract.returncode}): {backup.tail(err_extract)}")
    log.info("received a %d byte backup from %s", received, where)
    return trailer


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
        defaults = backup.write_private(
            work, "backup.cnf", backup.option_file({"mariabackup": backup.client_options(settings)})
        )
        target = os.path.join(work, "target")
        os.mkdir(target)
        err_path = os.path.join(work, "backup.err")
        sent = 0
        conn.settimeout(idle_timeout)
        with open(err_path, "wb") as err_log:
            process = subprocess.Popen(backup.backup_command(defaults, target), stdout=subprocess.PIPE, stderr=err_log)
            widen_pipe(process.stdout)
            reader = Overlap(lambda: process.stdout.read(CHUNK), produce=True)
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
                process.wait(idle_timeout)
            except (OSError, ssl.SSLError, subprocess.TimeoutExpired, CommandExecutionError) as err:
                process.kill()
                process.wait()
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
        messages = backup.tail(err_path, 200000)
        match = re.search(r"GTID of the last change '([^']*)'", messages)
        gtid = match.group(1) if match else None
        trailer = {"ok": process.returncode == 0, "gtid": gtid, "bytes": sent}
        if process.returncode:
            trailer["error"] = f"mariabackup exited with {process.returncode}: {messages[-1500:]}"
        with contextlib.suppress(OSError, ssl.SSLError):
            send_frame(conn, b"E", json.dumps(trailer).encode())
            conn.settimeout(30)
            conn.unwrap()
    if process.returncode:
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


# ---- the source's side: what a caller may ask, the listener


def role_stream(configured):
    """The db role's stream settings (ROLE_STREAM), moved only by this minion's own configuration (``configured``)."""
    configured = configured or {}
    if not isinstance(configured, dict) or set(configured) - set(ROLE_STREAM):
        raise CommandExecutionError(
            f"the minion option mariadb_replication.backup_stream must be a dict with keys from {sorted(ROLE_STREAM)}"
        )
    return dict(ROLE_STREAM, **configured)


def stream_request(caller, given, role, host, peers):
    """
    What serve_backup_stream serves, from what was ``given`` (name -> value, None left out; ``connection_*``
    too) by ``caller`` (salt's ``__pub_id``; None for a local call), the ``role``'s stream settings, this ``host``
    (``rolestack:host``) and its db ``peers``: a peer's call gets the role's port, files and this host's address,
    and only its own address may connect. The timeouts capped, the port, ``allow``'s addresses and the files
    checked. Returns ``{"port", "bind", "allow", "allowed", "expect", "ssl_cert", "ssl_key", "ssl_ca", "timeout",
    "idle_timeout"}`` (``expect``: the peer the client certificate must name, None for a local call).
    """
    request = {"expect": None}
    if caller is not None:
        expect = stream_peer(caller, given, peers, host)
        request.update({name: role[name] for name in ("port", "ssl_cert", "ssl_key", "ssl_ca")})
        request.update(expect=expect, allow=expect["address"], bind=host.get("address"))
        if not request["bind"]:
            raise SaltInvocationError("this host has no rolestack:host:address in its pillar: it serves no peer")
    else:
        if given.get("allow") is None:
            raise SaltInvocationError("allow (the replica's address) is required")
        request.update({name: given.get(name) or role[name] for name in ("ssl_cert", "ssl_key", "ssl_ca")})
        request.update(port=given.get("port", role["port"]), allow=given["allow"])
        request["bind"] = given.get("bind") or host.get("address")
        if not request["bind"]:
            raise SaltInvocationError("bind is required (this host has no rolestack:host:address in its pillar)")
    request["timeout"] = seconds(given.get("timeout"), "timeout", STREAM_TIMEOUT, MAX_STREAM_TIMEOUT)
    request["idle_timeout"] = seconds(given.get("idle_timeout"), "idle_timeout", IDLE_TIMEOUT, MAX_IDLE_TIMEOUT)
    request["port"] = sql.validate_port(request["port"])
    allow = request["allow"]
    try:
        found = socket.getaddrinfo(allow, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as err:
        raise SaltInvocationError(f"cannot resolve allow {allow!r}: {err}")
    request["allowed"] = {str(plain_ip(info[4][0])) for info in found}
    for name in ("ssl_cert", "ssl_key", "ssl_ca"):
        if not request[name] or not os.path.isfile(request[name]):
            raise SaltInvocationError(f"{name} {request[name]!r} does not exist")
    return request


def serve(request, settings, source):
    """
    Listen as ``request`` (``stream_request``) says, accept the one replica, say hello (``source``: this minion's
    id), wait for its "ready" and send the backup of the server at ``settings``. Returns (peer address, bytes sent,
    the backup's GTID position).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=request["ssl_ca"])
    context.load_cert_chain(request["ssl_cert"], request["ssl_key"])
    context.verify_mode = ssl.CERT_REQUIRED
    bind, port = request["bind"], request["port"]
    try:
        listener = socket.create_server((bind, port))
    except OSError as err:
        raise CommandExecutionError(f"cannot listen on {bind}:{port}: {err}")
    with listener:
        conn, address = accept_replica(
            listener, context, request["allow"], request["allowed"], request["expect"], request["timeout"]
        )
    with conn:
        try:
            send_frame(conn, b"H", json.dumps({"source": source}).encode())
            conn.settimeout(READY_WAIT)
            kind, _ = read_frame(conn, limit=4096)
        except (OSError, CommandExecutionError) as err:
            raise CommandExecutionError(f"the replica {address} was not ready within {READY_WAIT}s: {err}") from None
        if kind != b"R":
            raise CommandExecutionError(f"the replica {address} sent {kind!r} instead of ready")
        sent, position = send_backup(conn, settings, request["idle_timeout"])
    return address, sent, position


# ---- the replica's side: asking the source


def stream_source(peers, source_minion, master_host):
    """The db peer ``source_minion`` is (exactly its inventory name), checked to be the ``master_host`` too."""
    peer = peer_named(peers, source_minion)
    if peer is None:
        raise SaltInvocationError(
            f"source_minion {source_minion!r} is not a db peer of this host (rolestack:db:peers names: a host's "
            "minion id is its inventory name)"
        )
    if name_key(master_host) not in {name_key(peer[key]) for key in ("name", "fqdn", "address") if peer.get(key)}:
        raise SaltInvocationError(
            f"master_host {master_host} is not the name, FQDN or address of source_minion {source_minion}: the "
            "stream would come from another host than the one asked to serve it"
        )
    return peer


class Publish(threading.Thread):
    """
    The peer publish of serve_backup_stream on the source (salt's ``publish.publish``, allowed by the master's
    ``peer`` configuration, passed in as ``publish``), in the background: the source answers when the stream is
    over.
    """

    def __init__(self, publish, minion, args, timeout):
        super().__init__(daemon=True)
        self.publish = publish
        self.minion, self.args, self.timeout = minion, args, timeout
        self.answer, self.error = None, None

    def run(self):
        try:
            self.answer = self.publish(
                self.minion,
                "mariadb_replication.serve_backup_stream",
                arg=self.args,
                tgt_type="list",
                timeout=self.timeout,
            )
        except Exception as err:  # pylint: disable=broad-except  # any failure: the source did not serve
            self.error = err

    def describe(self):
        if self.error is not None:
            return f"the publish failed: {self.error}"
        return publish_disagrees(self.answer, self.minion, None) or f"it answered {self.answer!r}"

    def confirm(self, trailer):
        """Wait for the source's answer; CommandExecutionError unless it agrees with the stream's ``trailer``."""
        self.join(60)
        why = self.error and self.describe()
        why = why or publish_disagrees(self.answer, self.minion, trailer)
        if why:
            raise CommandExecutionError(f"{self.minion} did not confirm the stream: {why}")


@dataclasses.dataclass
class Restore:
    """
    provision_replica's mariabackup copy, as its keyword arguments give it: into ``datadir`` (None: the running
    server's), a ``fresh`` installation there moved aside only with ``overwrite_fresh``, the server stopped and
    started through ``service`` or SQL SHUTDOWN and ``start_command``, the files given to ``owner``; the backup
    from the source's stream (``stream_port``; with ``source_minion`` asked for through peer publish, ``allow``
    being ``replica_address``) or from a local server at ``source_socket``.
    """

    datadir: str | None
    overwrite_fresh: bool
    service: str | None
    start_command: object
    owner: str
    stream_port: object
    source_socket: str | None
    source_minion: str | None
    replica_address: str | None
    idle_timeout: object
    timeout: float

    def check(self, spec, peers):
        """Refuse contradicting arguments before anything happens (``peers``: called for the db peers)."""
        if (self.stream_port is None) == (self.source_socket is None):
            raise SaltInvocationError("method=mariabackup needs exactly one of stream_port or source_socket")
        if self.stream_port is not None:
            self.stream_port = sql.validate_port(self.stream_port, "stream_port")
            if not spec.ssl_cert or not spec.ssl_key:
                raise SaltInvocationError("the backup stream needs this replica's ssl_cert and ssl_key")
            self.idle_timeout = seconds(self.idle_timeout, "idle_timeout", IDLE_TIMEOUT, MAX_IDLE_TIMEOUT)
            if self.source_minion is not None:
                stream_source(peers(), self.source_minion, spec.master_host)
        elif self.source_minion is not None:
            raise SaltInvocationError("source_minion is for the backup stream (stream_port)")
        if self.service is None and not self.start_command:
            raise SaltInvocationError("with service=None, give start_command")

    def target(self, settings, where):
        """The data directory to fill (never guessed: a wrong one would be moved aside), and whether it is fresh."""
        running = server.server_up(settings, where)
        datadir = self.datadir
        if datadir is None:
            if not running:
                raise SaltInvocationError("the server is not running: give its datadir explicitly")
            with server.connect(settings, where) as conn:
                datadir = server.value(conn, "@@datadir", "reading datadir")
        if not os.path.isabs(datadir):
            raise SaltInvocationError(f"datadir must be an absolute path, not {datadir!r}")
        if running:
            with server.connect(settings, where) as conn:
                server.refuse_data(conn)
        datadir = os.path.normpath(datadir)
        return datadir, backup.check_datadir(datadir, self.overwrite_fresh)

    def open(self, spec, datadir, publish):
        """
        The source's stream, its TLS handshake done and this replica accepted, and the publish that asked for it
        (``publish``: called for salt's ``publish.publish``) or None; nothing here changed yet.
        """
        wait = min(self.timeout, MAX_STREAM_TIMEOUT)
        publishing = None
        if self.source_minion is not None:
            args = [f"timeout={wait:g}", f"idle_timeout={self.idle_timeout:g}"]
            if self.replica_address:
                args.append(f"allow={self.replica_address}")
            publishing = Publish(publish(), self.source_minion, args, self.timeout)
            publishing.start()
        try:
            stream = open_stream(spec.master_host, self.stream_port, spec.ssl_ca, spec.ssl_cert,
                                 spec.ssl_key, wait, publishing)  # fmt: skip
        except CommandExecutionError as err:
            raise CommandExecutionError(
                f"{err} (nothing on this host was changed: the server runs, {datadir} is untouched)"
            ) from err
        return stream, publishing

    def run(self, spec, settings, where, calls):
        """
        Copy the source's data into this server's data directory and start it, ``gtid_slave_pos`` set from the
        backup. ``calls``: salt's ``service.stop`` and ``service.start`` (None without a service), and callables
        for ``publish.publish`` and the db peers. The result of provision_replica, with the ``seconds`` each step
        took.
        """
        self.check(spec, calls["peers"])
        datadir, fresh = self.target(settings, where)
        steps = backup.Steps()
        stream = publishing = None
        if self.stream_port is not None:
            # the source must answer, verify and accept this replica before anything here changes
            stream, publishing = self.open(spec, datadir, calls["publish"])
            steps.took("handshake")
        try:
            server.stop_server(settings, where, self.service, calls["service.stop"], timeout=120)
            steps.took("stop")
            moved_aside = backup.make_room(datadir, fresh)
        except BaseException:
            if stream is not None:
                stream.close()  # the source, waiting for "ready", gives up
            raise
        steps.took("move_aside")
        try:
            if stream is not None:
                where_from = f"{spec.master_host}:{self.stream_port}"
                trailer = stream_backup_into(datadir, stream, where_from, self.idle_timeout)
                if publishing is not None:
                    publishing.confirm(trailer)
            else:
                source, _ = server.connection_settings({"unix_socket": self.source_socket}, lambda name: None)
                backup.local_backup_into(datadir, source, self.timeout)
            steps.took("copy")
            position = backup.backup_gtid(datadir)
            backup.prepare(datadir, self.timeout)
            steps.took("prepare")
            backup.chown_tree(datadir, self.owner)
            steps.took("chown")
        except CommandExecutionError as err:
            aside = f"; the previous data directory is {moved_aside}" if moved_aside else ""
            raise CommandExecutionError(f"{err} ({datadir} is incomplete and the server is stopped{aside})") from err
        pid = server.start_server(settings, where, self.service, calls["service.start"], self.start_command, 120)
        steps.took("start")
        with server.connect(settings, where) as conn:
            server.forget_source(conn, position)
        return {"method": "mariabackup", "datadir": datadir, "moved_aside": moved_aside, "pid": pid,
                "seconds": steps.seconds}  # fmt: skip
