"""
A private nutcracker (twemproxy) for the functional tests and the bench: runs in the foreground on 127.0.0.1 with
its own directory, configuration, stats port and pid, stopped by its PID (tests.support.services.PrivateService),
plus small clients: memcached's text protocol over a socket, redis through redis-cli.
"""

import contextlib
import os
import socket
import subprocess

from tests.support.services import PrivateService
from tests.support.services import free_port
from tests.support.services import port_open


class PrivateNutcracker(PrivateService):
    kind = "nutcracker"
    binary = "nutcracker"

    def __init__(
        self, root, config_text, listen_ports, stats_port=None, stats_interval_ms=100, verbose=None, **options
    ):
        super().__init__(root, port=stats_port or free_port(), **options)
        self.config = self.root / "nutcracker.yml"
        self.config_text = config_text
        self.listen_ports = list(listen_ports)
        self.stats_interval_ms = stats_interval_ms
        self.verbose = verbose  # nutcracker's log level (None: its default)

    @property
    def stats_port(self):
        return self.port

    def prepare(self):
        self.config.write_text(self.config_text)
        self.config.chmod(0o640)

    def command(self):
        return [
            self.binary,
            f"--conf-file={self.config}",
            f"--stats-addr={self.host}",
            f"--stats-port={self.port}",
            f"--stats-interval={self.stats_interval_ms}",
            f"--pid-file={self.root / 'nutcracker.pid'}",
            f"--output={self.log}",
            *([f"--verbose={self.verbose}"] if self.verbose is not None else []),
        ]

    def ready(self):
        return port_open(self.port) and all(port_open(port) for port in self.listen_ports)


def memcached_command(port, command, timeout=2.0):
    """Send one memcached text command (bytes, with its data block) and return the first reply line(s)."""
    with contextlib.closing(socket.create_connection(("127.0.0.1", port), timeout=timeout)) as sock:
        sock.settimeout(timeout)
        sock.sendall(command)
        reply = b""
        while not _complete(reply):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def _complete(reply):
    """A whole reply: one line (STORED, an error, ...), or VALUE blocks up to END."""
    if not reply.endswith(b"\r\n"):
        return False
    return not reply.startswith(b"VALUE ") or reply.endswith(b"\r\nEND\r\n")


def memcached_set(port, key, value, timeout=2.0):
    data = value.encode()
    return memcached_command(port, b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(data), data), timeout)


def memcached_get(port, key, timeout=2.0):
    """The value stored under ``key`` (str) or None."""
    reply = memcached_command(port, b"get %s\r\n" % key.encode(), timeout)
    if not reply.startswith(b"VALUE "):
        return None
    return reply.split(b"\r\n")[1].decode()


def redis_cli(port, *args, password=None, timeout=5):
    """redis-cli's reply (stripped text) to one command on 127.0.0.1:port; with ``password``, after AUTH."""
    command = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
    env = {key: value for key, value in os.environ.items() if key != "REDISCLI_AUTH"}
    if password is not None:
        env["REDISCLI_AUTH"] = password  # not on the command line
    ran = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return (ran.stdout + ran.stderr).strip()
