"""
The backup stream (mariadb_replication.serve_backup_stream / provision_replica) as an attacker and a broken peer
would meet it, against real private mariadbd instances and certificates that name hosts as the db role's do:

- through peer publish (salt passes the caller's minion id as ``__pub_id``) the caller chooses no CA, certificate,
  key, port or bind address, must be a db peer (by its inventory name), streams only to its own pillar address,
  and must present a client certificate naming it; the timeouts are capped (also for local calls);
- a receiver that stalls makes the source kill mariabackup, so its locks go, within the idle timeout; a source
  that stalls makes the replica fail within the idle timeout;
- a replica whose source cannot be reached, does not verify, refuses its certificate, or whose peer publish
  answers nothing, is left exactly as it was: server running, data directory untouched.

Its servers, PKI and loaders are its own (one module, one PKI: see tests/functional/conftest.py).
"""

import os
import socket
import ssl
import struct
import threading
import time

import pymysql
import pytest
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError
from saltfactories.utils.functional import Loaders

from tests.support.mariadb import listening
from tests.support.mariadb import make_host_pki
from tests.support.mariadb import serve_in_background
from tests.support.paths import LOADER_DIRS
from tests.support.services import free_port
from tests.support.services import wait_for

SOURCE = {"name": "db1", "fqdn": "db1.test.zone", "address": "127.0.0.1"}
DB2 = {"name": "db2", "fqdn": "db2.test.zone", "address": "127.0.0.2"}
DB3 = {"name": "db3", "fqdn": "db3.test.zone", "address": "127.0.0.3"}
PEERS = [SOURCE, DB2, DB3]
FRAME = struct.Struct(">cI")
IDLE = 4  # the idle timeout the stall tests use (seconds)
MARGIN = 20  # what a loaded 2-core machine may add to it


@pytest.fixture(scope="module")
def pki(test_root):
    return make_host_pki(test_root / "pki-backup-stream", SOURCE, [DB2, DB3])


@pytest.fixture(scope="module")
def role_port():
    return free_port()


def _loaders(salt_factories, test_root, host, **options):
    """A masterless minion ``host['name']`` whose pillar is the db role's view (rolestack:host, rolestack:db:peers)."""
    tree = test_root / f"pillar-stream-{host['name']}"
    tree.mkdir(exist_ok=True)
    (tree / "top.sls").write_text("base:\n  '*':\n    - rolestack\n")
    peers = "".join(f"        - {{name: {p['name']}, fqdn: {p['fqdn']}, address: {p['address']}}}\n" for p in PEERS)
    (tree / "rolestack.sls").write_text(
        "rolestack:\n"
        f"  host: {{name: {host['name']}, fqdn: {host['fqdn']}, address: {host['address']}}}\n"
        f"  db:\n    peers:\n{peers}"
    )
    config = {"file_client": "local", "ext_pillar": [], "pillar_roots": {"base": [str(tree)]}, **LOADER_DIRS, **options}
    factory = salt_factories.salt_minion_daemon(host["name"], overrides=config)
    return Loaders(factory.config.copy())


@pytest.fixture(scope="module")
def source_loaders(salt_factories, test_root, pki, role_port, source):
    """The source's minion: the role's stream files and port, and its server, from its own configuration."""
    stream = {"port": role_port, "ssl_ca": pki["good_ca"], "ssl_cert": pki["server_cert"], "ssl_key": pki["server_key"]}
    options = {"mariadb_replication.backup_stream": stream, "mariadb.unix_socket": str(source.server.socket)}
    loaders = _loaders(salt_factories, test_root, SOURCE, **options)
    yield loaders
    loaders.reset_state()


@pytest.fixture(scope="module")
def replica_loaders(salt_factories, test_root):
    loaders = _loaders(salt_factories, test_root, DB2)
    yield loaders
    loaders.reset_state()


@pytest.fixture(scope="module")
def src(source_loaders):
    return source_loaders.modules.mariadb_replication


@pytest.fixture(scope="module")
def source(instances):
    """The source server, with about 60 MB of data (more than socket buffers, pipe and queue hold)."""
    instance = instances(1)
    instance.sql("CREATE DATABASE IF NOT EXISTS app")
    instance.sql("CREATE TABLE app.big (id INT PRIMARY KEY, filler VARCHAR(1000)) ENGINE=InnoDB")
    instance.sql("CREATE TABLE app.flat (id INT PRIMARY KEY, filler VARCHAR(1000)) ENGINE=MyISAM")
    for table in ("big", "flat"):
        instance.sql(f"INSERT INTO app.{table} SELECT seq, REPEAT(MD5(seq), 31) FROM app.seq_1_to_30000")
    return instance


# ---- helpers: the test plays the replica (or the source) by hand


def _serve(src, listen_port, **kwargs):
    """serve_backup_stream in a thread; (thread, outcome) once it listens (or ended)."""
    return serve_in_background(src.serve_backup_stream, listen_port, **kwargs)


def _peer_serve(src, port, caller="db2", **kwargs):
    """As salt runs it for a peer publish: the caller's minion id in __pub_id."""
    return _serve(src, port, __pub_id=caller, **kwargs)


def _client(pki, label, port, address="127.0.0.2", ca="good_ca", rcvbuf=None):
    """A TLS connection from ``address`` to the source with the client certificate ``label``."""
    context = ssl.create_default_context(cafile=pki[ca])
    context.load_cert_chain(pki[f"{label}_cert"], pki[f"{label}_key"])
    raw = socket.socket()
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.bind((address, 0))
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    return context.wrap_socket(raw, server_hostname=SOURCE["fqdn"])


def _knock(pki, label, port, **options):
    """Connect as _client does and read the source's first frame: its kind, or None when refused."""
    try:
        tls = _client(pki, label, port, **options)
    except (ssl.SSLError, ConnectionError):
        return None
    with tls:
        return _hello(tls)


def _hello(tls):
    """The first frame's kind, or None when the source closed the connection (or TLS failed) instead."""
    try:
        header = tls.recv(FRAME.size)
        while header and len(header) < FRAME.size:
            header += tls.recv(FRAME.size - len(header))
    except (ssl.SSLError, ConnectionError):
        return None
    if not header:
        return None
    kind, size = FRAME.unpack(header)
    while size:
        size -= len(tls.recv(size))
    return kind


def _other_sessions(instance):
    """Client sessions on ``instance`` but the one asking (mariabackup's, while it runs)."""
    return instance.server.sql(
        "SELECT ID, USER, COMMAND, STATE, INFO FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
        "AND USER NOT IN ('system user', 'event_scheduler') AND COMMAND <> 'Daemon'",
        dicts=True,
    )


def _write_without_waiting(instance, row_id):
    """An INSERT in each table and a DDL, each allowed 2 s for its locks: fails while a backup lock is held."""
    conn = pymysql.connect(unix_socket=str(instance.server.socket), user="root", autocommit=True)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION lock_wait_timeout = 2, innodb_lock_wait_timeout = 2")
            for table in ("big", "flat"):
                cursor.execute(f"INSERT INTO app.{table} VALUES (%s, 'after the stall')", (row_id,))
            cursor.execute(f"CREATE TABLE app.after_{row_id} (id INT PRIMARY KEY)")
    finally:
        conn.close()


def _replica_args(pki, port, **overrides):
    args = {
        "master_host": "127.0.0.1",
        "master_port": port,
        "master_user": "repl",
        "master_password": "unused-repl-password",
        "ssl_ca": pki["good_ca"],
        "ssl_cert": pki["client_db2_cert"],
        "ssl_key": pki["client_db2_key"],
        "service": None,
        "overwrite_fresh": True,
    }
    args.update(overrides)
    return args


def _as_it_was(instance):
    """What must not change on a replica whose provisioning could not start: it runs; its datadir's entries."""
    datadir = instance.server.datadir
    siblings = sorted(p.name for p in datadir.parent.iterdir() if p.name.startswith(datadir.name + ".pre-provision"))
    running = instance.sql("SELECT 1") == ((1,),)
    return running, sorted(os.listdir(datadir)), siblings


class _FakeSource(threading.Thread):
    """A TLS listener with ``cert``: says hello and, after the replica's ready, sends nothing (a stalled source)."""

    def __init__(self, pki, port, cert="server", hello=True):
        super().__init__(daemon=True)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["good_ca"])
        self.context.load_cert_chain(pki[f"{cert}_cert"], pki[f"{cert}_key"])
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", port))
        self.hello, self.release, self.got_ready = hello, threading.Event(), threading.Event()

    def run(self):
        with self.listener:
            raw, _ = self.listener.accept()
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    if self.hello:
                        tls.sendall(FRAME.pack(b"H", 2) + b"{}")
                        if tls.recv(FRAME.size)[:1] == b"R":
                            self.got_ready.set()
                    self.release.wait(120)
            except (ssl.SSLError, OSError):
                raw.close()


# ---- the source: what a peer can ask for


@pytest.mark.parametrize(
    "hostile",
    [
        {"allow": "127.0.0.9"},
        {"ssl_ca": "wrong_ca"},
        {"ssl_cert": "wrong_server_cert", "ssl_key": "wrong_server_key"},
        {"bind": "0.0.0.0"},
        {"port": 1},
        {"connection_unix_socket": "/run/other.sock"},
    ],
    ids=",".join,
)
def test_peer_call_with_hostile_arguments_is_refused(src, source, pki, role_port, hostile):
    args = {key: pki.get(value, value) if isinstance(value, str) else value for key, value in hostile.items()}
    started = time.monotonic()
    with pytest.raises(SaltInvocationError) as err:
        src.serve_backup_stream(__pub_id="db2", timeout=5, **args)
    assert time.monotonic() - started < 3 and not listening(role_port)
    if "allow" in hostile:
        assert "allow (a str) is not the caller db2's address 127.0.0.2" in str(err.value)
    else:
        assert f"{', '.join(sorted(hostile))} refused" in str(err.value)


def test_the_lab_attack_is_refused(src, source, pki, role_port):
    """From the issue: a peer asks for a stream to an address it chose, verified against a CA it chose."""
    started = time.monotonic()
    with pytest.raises(
        SaltInvocationError, match=r"peer publish \(caller app1\): bind, port, ssl_ca, ssl_cert, ssl_key"
    ):
        src.serve_backup_stream(
            role_port, "127.0.0.9", pki["server_cert"], pki["server_key"], pki["wrong_ca"], "0.0.0.0", 3,
            __pub_id="app1",
        )  # fmt: skip
    assert time.monotonic() - started < 3 and not listening(role_port)


@pytest.mark.parametrize("caller", ["app1", "db2.test.zone", "127.0.0.2", "db1"])
def test_caller_must_be_another_db_peer_by_its_inventory_name(src, source, role_port, caller):
    with pytest.raises(SaltInvocationError, match=r"not a db peer of this host|cannot stream to itself"):
        src.serve_backup_stream(__pub_id=caller, timeout=5)
    assert not listening(role_port)


def test_timeouts_are_capped_for_peers_and_local_calls(src, source, pki, role_port):
    for kwargs in ({"timeout": 901}, {"idle_timeout": 601}, {"timeout": 10**6}, {"timeout": "forever"}):
        with pytest.raises(SaltInvocationError, match=r"(at most 900|at most 600) seconds|not a str"):
            src.serve_backup_stream(__pub_id="db2", **kwargs)
    local = [role_port, "127.0.0.2", pki["server_cert"], pki["server_key"], pki["good_ca"], "127.0.0.1"]
    with pytest.raises(SaltInvocationError, match="timeout must be more than 0 and at most 900 seconds"):
        src.serve_backup_stream(*local, 901)
    with pytest.raises(SaltInvocationError, match="idle_timeout must be more than 0 and at most 600 seconds"):
        src.serve_backup_stream(*local, 60, 601)
    assert not listening(role_port)


def test_peer_stream_only_to_a_certificate_naming_the_caller(src, source, pki, role_port):
    thread, outcome = _peer_serve(src, role_port, timeout=20)
    assert listening(role_port), outcome
    # db3's certificate (the platform's CA, another host) from db2's address: closed without a hello
    assert _knock(pki, "client_db3", role_port) is None
    # a certificate naming db2 from another CA (a public CA's would be the same): refused
    assert _knock(pki, "wrong_client_db2", role_port) is None
    # db2's certificate, from another address: closed unanswered
    assert _knock(pki, "client_db2", role_port, address="127.0.0.3") is None
    assert thread.is_alive()  # still waiting for db2
    # db2's certificate from db2's address: accepted (the hello); it leaves before saying ready
    tls = _client(pki, "client_db2", role_port)
    assert _hello(tls) == b"H"
    tls.close()
    thread.join(30)
    assert "the replica 127.0.0.2 was not ready" in str(outcome.get("error")), outcome


def test_certificate_naming_another_host_keeps_the_source_waiting_until_its_timeout(src, source, pki, role_port):
    thread, outcome = _peer_serve(src, role_port, timeout=4)
    assert _knock(pki, "client_db3", role_port) is None
    thread.join(20)
    assert not thread.is_alive()
    assert "no connection from 127.0.0.2 within 4s (refused ['127.0.0.2'])" in str(outcome.get("error")), outcome


# ---- idle timeouts


def test_stalled_receiver_gets_mariabackup_killed_and_the_locks_released(src, source, pki, role_port):
    thread, outcome = _peer_serve(src, role_port, timeout=20, idle_timeout=IDLE)
    tls = _client(pki, "client_db2", role_port, rcvbuf=4096)
    assert _hello(tls) == b"H"
    tls.sendall(FRAME.pack(b"R", 0))
    tls.recv(65536)  # the first bytes of the backup, then this replica stops reading
    wait_for(lambda: _other_sessions(source), 30, "mariabackup's session on the source")
    stalled = time.monotonic()
    print("during the stall:", _other_sessions(source))
    try:
        thread.join(IDLE + MARGIN)
        assert not thread.is_alive(), f"serve_backup_stream still streams {IDLE + MARGIN}s after the stall"
        assert "the replica stopped reading" in str(outcome.get("error")), outcome
        wait_for(lambda: not _other_sessions(source), 5, "mariabackup's session to end")
        assert time.monotonic() - stalled < IDLE + MARGIN
        _write_without_waiting(source, 1_000_001)
    finally:
        tls.close()
        thread.join(60)


def test_stalled_source_fails_the_replica_within_the_idle_timeout(mdb_replica, instances, pki):
    target = instances(40, read_only=True)
    port = free_port()
    fake = _FakeSource(pki, port)
    fake.start()
    started = time.monotonic()
    try:
        with pytest.raises(CommandExecutionError, match=rf"stalled: nothing for {IDLE}s \(idle_timeout\)"):
            mdb_replica.provision_replica(
                **_replica_args(pki, target.port, start_command=" ".join(target.server.command())),
                stream_port=port,
                idle_timeout=IDLE,
                timeout=30,
                **target.args,
            )
        assert fake.got_ready.is_set()
        assert time.monotonic() - started < IDLE + MARGIN + 10  # + stopping the server after the hello
    finally:
        fake.release.set()
        fake.join(10)


# ---- the replica: nothing changes until the source answered, verified and accepted it


@pytest.fixture(scope="module")
def mdb_replica(replica_loaders):
    return replica_loaders.modules.mariadb_replication


@pytest.fixture(scope="module")
def fresh(instances):
    """A freshly installed server: every refusal below must leave it exactly so."""
    return instances(20, read_only=True)


def _refused_unchanged(mdb_replica, fresh, pki, match, **options):
    before = _as_it_was(fresh)
    with pytest.raises(CommandExecutionError, match=match) as err:
        mdb_replica.provision_replica(
            **_replica_args(pki, fresh.port, start_command=" ".join(fresh.server.command())), **options, **fresh.args
        )
    assert "nothing on this host was changed: the server runs" in str(err.value)
    assert _as_it_was(fresh) == before == (True, before[1], [])


def test_unreachable_source_changes_nothing(mdb_replica, fresh, pki):
    _refused_unchanged(mdb_replica, fresh, pki, "cannot reach the backup stream", stream_port=free_port(), timeout=2)


def test_source_certificate_from_another_ca_changes_nothing(mdb_replica, fresh, pki):
    port = free_port()
    fake = _FakeSource(pki, port, cert="wrong_server")
    fake.start()
    try:
        _refused_unchanged(
            mdb_replica, fresh, pki, "TLS with the backup stream at 127.0.0.1:.* failed", stream_port=port
        )
    finally:
        fake.release.set()
        fake.join(10)


def test_source_refusing_this_replica_changes_nothing(src, source, mdb_replica, fresh, pki):
    """The source does not accept this replica's certificate (TLS 1.3: the client's handshake completes anyway)."""
    port = free_port()
    serve = {
        "allow": "127.0.0.1",
        "ssl_cert": pki["server_cert"],
        "ssl_key": pki["server_key"],
        "ssl_ca": pki["wrong_ca"],
    }
    thread, outcome = _serve(src, port, port=port, bind="127.0.0.1", timeout=5, **serve)
    _refused_unchanged(mdb_replica, fresh, pki, "did not accept this replica", stream_port=port, timeout=10)
    thread.join(20)
    assert "no connection from 127.0.0.1 within 5s" in str(outcome.get("error")), outcome


def _replica_state(replica_loaders, fresh, pki, **options):
    """The db role's replica state on a fresh server (as states/db/replication.sls calls it)."""
    return replica_loaders.states.mariadb_replication.replica_configured(
        name=SOURCE["address"],
        master_port=fresh.port,
        master_user="repl",
        master_password="unused-repl-password",
        ssl_ca=pki["good_ca"],
        ssl_cert=pki["client_db2_cert"],
        ssl_key=pki["client_db2_key"],
        stream_port=free_port(),
        replica_address=DB2["address"],
        timeout=20,
        **options,
        **fresh.args,
    )


def test_empty_publish_answer_is_a_failure_and_changes_nothing(replica_loaders, fresh, pki):
    """Masterless, publish.publish answers nothing: the state fails, says why, and the server is as it was."""
    before = _as_it_was(fresh)
    ret = _replica_state(replica_loaders, fresh, pki, source_minion="db1")
    assert ret.result is False, ret
    assert "no answer to the peer publish of mariadb_replication.serve_backup_stream" in ret.comment
    assert "nothing on this host was changed" in ret.comment and "Traceback" not in ret.comment
    assert _as_it_was(fresh) == before and before[0] is True and before[2] == []


@pytest.mark.parametrize("source_minion", ["db1.test.zone", "db9"])
def test_source_minion_is_an_inventory_name_never_an_fqdn(replica_loaders, fresh, pki, source_minion):
    before = _as_it_was(fresh)
    ret = _replica_state(replica_loaders, fresh, pki, source_minion=source_minion)
    assert ret.result is False, ret
    assert f"source_minion {source_minion!r} is not a db peer of this host" in ret.comment
    assert _as_it_was(fresh) == before
