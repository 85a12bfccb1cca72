"""The private service fixtures: real daemons on loopback, password-protected where the role demands."""

import socket
import subprocess


def _talk(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def test_redis_requires_its_password(private_redis):
    assert b"NOAUTH" in _talk(private_redis.port, b"PING\r\n")
    assert b"+OK" in _talk(private_redis.port, f"AUTH {private_redis.password}\r\n".encode())


def test_memcached_answers_on_loopback(private_memcached):
    assert _talk(private_memcached.port, b"version\r\n").startswith(b"VERSION")


def test_mariadb_runs_privately(private_mariadb):
    out = subprocess.run(
        ["mariadb", f"--socket={private_mariadb.socket}", "-uroot", "-N", "-e", "SELECT @@port, @@bind_address"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out == [str(private_mariadb.port), "127.0.0.1"]


def test_stop_is_by_pid(service_factory):
    service = service_factory("memcached")
    pid = service.pid
    service.stop()
    assert service.process.poll() is not None
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0
