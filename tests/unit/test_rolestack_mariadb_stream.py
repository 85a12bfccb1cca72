"""
The provisioning stream's util (``_utils/rolestack_mariadb_stream.py``): what a peer-published serve_backup_stream
accepts from its caller, whether a client certificate names the peer, the timeouts' caps, when the source's publish
answer confirms a stream, the overlap of reading and writing, option files and the backup's binlog position. The
real listener, mariabackup and TLS: tests/functional/test_backup_stream_security.py.
"""

import pytest
import rolestack_mariadb_stream as stream
from salt.exceptions import SaltInvocationError

DB1 = {"name": "db1-masterdb", "fqdn": "db1-masterdb.production.wpdn", "address": "10.10.10.11", "server_id": 11}
DB2 = {"name": "db2", "fqdn": "db2.production.wpdn", "address": "10.10.10.12", "server_id": 12}
PEERS = [DB1, DB2]
HOST = {"name": "db1-masterdb", "fqdn": "db1-masterdb.production.wpdn", "address": "10.10.10.11"}


# ---- what a peer may pass


def test_a_db_peer_with_no_arguments_gets_itself():
    assert stream.stream_peer("db2", {}, PEERS, HOST) == DB2
    assert stream.stream_peer("db2", {"timeout": 300, "idle_timeout": 30}, PEERS, HOST) == DB2


@pytest.mark.parametrize("allow", ["10.10.10.12", "::ffff:10.10.10.12"])
def test_allow_may_be_the_peers_own_address(allow):
    assert stream.stream_peer("db2", {"allow": allow}, PEERS, HOST) == DB2


@pytest.mark.parametrize(
    "given",
    [
        {"ssl_ca": "/etc/ssl/certs/ca-certificates.crt"},
        {"ssl_cert": "/tmp/x.pem", "ssl_key": "/tmp/x.key"},
        {"bind": "0.0.0.0"},
        {"port": 4444},  # even the role's own value: a peer passes none of them
        {"connection_unix_socket": "/run/other.sock"},
        {"connection_user": "root"},
    ],
)
def test_a_peer_chooses_no_security_setting(given):
    with pytest.raises(SaltInvocationError, match=rf"{', '.join(sorted(given))} refused; a peer passes only allow"):
        stream.stream_peer("db2", given, PEERS, HOST)


@pytest.mark.parametrize("allow", ["10.10.10.99", "db2", "db2.production.wpdn", "0.0.0.0", ""])
def test_allow_other_than_the_peers_address_is_refused(allow):
    with pytest.raises(SaltInvocationError, match=r"allow \(a str\) is not the caller db2's address 10.10.10.12"):
        stream.stream_peer("db2", {"allow": allow}, PEERS, HOST)


@pytest.mark.parametrize("caller", ["app1", "db2.production.wpdn", "10.10.10.12", "DB2", "db", "", None])
def test_the_caller_must_be_a_db_peer_by_its_inventory_name(caller):
    with pytest.raises(SaltInvocationError, match="is not a db peer of this host"):
        stream.stream_peer(caller, {}, PEERS, HOST)


def test_a_peer_without_an_address_or_a_malformed_peer_list_qualifies_nobody():
    assert stream.peer_named([{"name": "db2", "address": None}], "db2") is None
    assert stream.peer_named({"db2": DB2}, "db2") is None
    assert stream.peer_named(["db2"], "db2") is None


def test_this_host_cannot_ask_itself():
    with pytest.raises(SaltInvocationError, match="cannot stream to itself"):
        stream.stream_peer("db1-masterdb", {}, PEERS, HOST)


# ---- the client certificate must name the peer


def _cert(cn=None, *sans):
    return {"subject": ((("commonName", cn),),) if cn else (), "subjectAltName": tuple(sans)}


@pytest.mark.parametrize(
    "cert",
    [
        _cert("db2.production.wpdn"),
        _cert("DB2.Production.WPDN."),
        _cert("something", ("DNS", "db2")),
        _cert(None, ("IP Address", "10.10.10.12")),
        _cert("db3.production.wpdn", ("DNS", "db3"), ("DNS", "db2.production.wpdn")),
    ],
)
def test_a_certificate_naming_the_peer_matches(cert):
    assert stream.certificate_names_peer(cert, DB2)


@pytest.mark.parametrize(
    "cert",
    [
        _cert("db3.production.wpdn", ("DNS", "db3"), ("IP Address", "10.10.10.13")),
        _cert("*.production.wpdn"),
        _cert(None, ("DNS", "db2.production.wpdn.evil"), ("email", "db2.production.wpdn")),
        _cert("db-replica"),
        {},
        None,
    ],
)
def test_a_certificate_naming_another_host_does_not(cert):
    assert not stream.certificate_names_peer(cert, DB2)


# ---- caps


def test_seconds_default_and_caps():
    assert stream.seconds(None, "timeout", 600, 900) == 600.0
    assert stream.seconds("900", "timeout", 600, 900) == 900.0
    for value, error in ((901, "at most 900 seconds"), (0, "more than 0"), (-1, "more than 0"), ("nan", "not nan")):
        with pytest.raises(SaltInvocationError, match=error):
            stream.seconds(value, "timeout", 600, 900)
    for value, kind in (("forever", "str"), (True, "bool"), ([1], "list")):
        with pytest.raises(SaltInvocationError, match=f"timeout must be a number of seconds, not a {kind}"):
            stream.seconds(value, "timeout", 600, 900)


def test_the_caps_are_documented_values():
    assert (stream.MAX_STREAM_TIMEOUT, stream.MAX_IDLE_TIMEOUT, stream.IDLE_TIMEOUT) == (900, 600, 60)
    assert stream.STREAM_TIMEOUT <= stream.MAX_STREAM_TIMEOUT


# ---- the source's publish answer


TRAILER = {"ok": True, "gtid": "0-11-42", "bytes": 1234}


def test_an_answer_agreeing_with_the_trailer_confirms_the_stream():
    answer = {"db1-masterdb": {"peer": "10.10.10.12", "caller": "db2", "bytes": 1234, "gtid": "0-11-42"}}
    assert stream.publish_disagrees(answer, "db1-masterdb", TRAILER) is None


@pytest.mark.parametrize(
    "answer, says",
    [
        ({}, "no answer to the peer publish"),
        (None, "no answer to the peer publish"),
        ("'mariadb_replication.serve_backup_stream' publish timed out", "an answer without db1-masterdb"),
        ({"db1-masterdb.production.wpdn": {"bytes": 1234}}, "an answer without db1-masterdb"),
        ({"db1-masterdb": "Passed invalid arguments: port refused"}, "db1-masterdb answered: Passed invalid"),
        ({"db1-masterdb": {"bytes": 999, "gtid": "0-11-42"}}, "answered bytes 999, the stream's trailer said 1234"),
        ({"db1-masterdb": {"bytes": 1234, "gtid": "0-11-41"}}, "answered gtid '0-11-41'"),
    ],
)
def test_an_empty_failed_or_different_answer_does_not(answer, says):
    assert says in stream.publish_disagrees(answer, "db1-masterdb", TRAILER)


# ---- the overlap of reading and writing


def test_overlap_consumer_writes_every_chunk_in_order_and_ends():
    written = []
    writer = stream.Overlap(written.append, produce=False)
    writer.start()
    for index in range(20):
        writer.put(b"%d" % index)
    writer.finish()
    assert written == [b"%d" % index for index in range(20)] and not writer.is_alive()


def test_overlap_consumer_error_reaches_the_caller_without_a_hang():
    def broken_pipe(_chunk):
        raise BrokenPipeError("mbstream exited")

    writer = stream.Overlap(broken_pipe, produce=False)
    writer.start()
    with pytest.raises(BrokenPipeError):
        for _ in range(50):  # more than the queue holds: put must not block once the thread failed
            writer.put(b"x")
        writer.finish()
    writer.finish_quietly()
    assert not writer.is_alive()


def test_overlap_producer_yields_until_the_end_and_raises_its_error():
    chunks = iter([b"a", b"b", b""])
    reader = stream.Overlap(lambda: next(chunks), produce=True)
    reader.start()
    assert list(reader) == [b"a", b"b"]
    reader.finish()

    def failing():
        raise OSError("read failed")

    reader = stream.Overlap(failing, produce=True)
    reader.start()
    with pytest.raises(OSError, match="read failed"):
        list(reader)
