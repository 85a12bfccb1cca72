"""
Private real services for tests: each runs in the foreground of its own process, on 127.0.0.1, with its
own directory and a free port, and is stopped by its PID (never by process name).

Fixtures (a pytest plugin, loaded by tests/conftest.py):
    service_factory  -> start(kind, **options) returns a started service; all are stopped at session end
    private_redis, private_memcached, private_mariadb -> one started instance each (session scope)
"""

import contextlib
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile

import pymysql
import pytest
import rolestack_highstate


def free_port():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, what):
    """rolestack_highstate.wait_for, asking every 50 ms: the tests' services start in well under a second."""
    rolestack_highstate.wait_for(predicate, timeout, what, interval=0.05)


def port_open(port, host="127.0.0.1"):
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class PrivateService:
    """A daemon run in the foreground under our control; `pid` is what stop() signals."""

    kind = "service"
    binary = None

    def __init__(self, root, **options):
        self.root = pathlib.Path(tempfile.mkdtemp(prefix=f"{self.kind}-", dir=root))
        os.chmod(self.root, 0o755)
        self.host = "127.0.0.1"
        self.port = options.pop("port", None) or free_port()
        self.options = options
        self.process = None
        self.log = self.root / f"{self.kind}.log"

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def command(self):
        raise NotImplementedError

    def prepare(self):
        """Create files the daemon needs before it starts."""

    def ready(self):
        return port_open(self.port)

    def start(self, timeout=30):
        if not self.binary or not shutil.which(self.binary):
            pytest.skip(f"{self.binary} is not installed (make test installs it)")
        self.prepare()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root
            )

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            return self.ready()

        wait_for(up, timeout, f"{self.kind} on port {self.port}")
        return self

    def stop(self, timeout=15):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __repr__(self):
        return f"<{self.kind} 127.0.0.1:{self.port} pid={self.pid}>"


class PrivateRedis(PrivateService):
    kind = "redis"
    binary = "redis-server"

    def __init__(self, root, password="private-redis-test-password", **options):
        super().__init__(root, **options)
        self.password = password

    def command(self):
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--daemonize",
            "no",
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            self.password,
        ]


class PrivateMemcached(PrivateService):
    kind = "memcached"
    binary = "memcached"

    def command(self):
        return [self.binary, "-p", str(self.port), "-l", self.host, "-U", "0", "-u", "nobody", "-m", "16"]


class PrivateMariaDB(PrivateService):
    """A private mariadbd: own datadir, socket, pid file and port; root logs in over the socket."""

    kind = "mariadb"
    binary = "mariadbd"

    def __init__(self, root, server_id=1, extra_config="", **options):
        super().__init__(root, **options)
        self.server_id = server_id
        self.extra_config = extra_config
        self.datadir = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.defaults_file = self.root / "my.cnf"

    def prepare(self):
        self.defaults_file.write_text(
            "[mysqld]\n"
            f"datadir = {self.datadir}\nsocket = {self.socket}\npid-file = {self.root / 'mysqld.pid'}\n"
            f"port = {self.port}\nbind-address = {self.host}\nserver-id = {self.server_id}\n"
            f"log-error = {self.log}\nuser = mysql\nskip-name-resolve\n"
            "innodb_buffer_pool_size = 32M\ninnodb_log_file_size = 16M\n"
            f"{self.extra_config}\n"
        )
        if not self.datadir.exists():
            self.datadir.mkdir()
            mysql = pwd.getpwnam("mysql")
            for path in (self.root, self.datadir):
                os.chown(path, mysql.pw_uid, mysql.pw_gid)
            installed = subprocess.run(
                [
                    "mariadb-install-db",
                    f"--defaults-file={self.defaults_file}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
                capture_output=True,
                text=True,
            )
            if installed.returncode:
                # its own words and the server's log: the exit status alone says nothing
                log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"
                raise RuntimeError(
                    f"mariadb-install-db exited with {installed.returncode}: {installed.stdout[-2000:]}"
                    f"{installed.stderr[-2000:]}\n{self.log}:\n{log}"
                )

    def command(self):
        return [self.binary, f"--defaults-file={self.defaults_file}"]

    def ready(self):
        return self.socket.exists() and port_open(self.port)

    def sql(self, statement, args=None, dicts=False):
        """Run one statement as root over the socket (autocommit); its rows, as dicts when ``dicts``."""
        cursorclass = pymysql.cursors.DictCursor if dicts else pymysql.cursors.Cursor
        conn = pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True, cursorclass=cursorclass)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, args)
                return cursor.fetchall()
        finally:
            conn.close()


class PrivateRsyncd(PrivateService):
    """rsync --daemon in the foreground on 127.0.0.1 with a given config file (the roles render it)."""

    kind = "rsyncd"
    binary = "rsync"

    def __init__(self, root, config, **options):
        super().__init__(root, **options)
        self.config = config

    def command(self):
        return [
            self.binary,
            "--daemon",
            "--no-detach",
            f"--config={self.config}",
            f"--port={self.port}",
            f"--address={self.host}",
            f"--log-file={self.log}",
        ]


KINDS = {"redis": PrivateRedis, "memcached": PrivateMemcached, "mariadb": PrivateMariaDB}


@pytest.fixture(scope="session")
def service_factory(test_root):
    started = []

    def start(kind, **options):
        service = KINDS[kind](test_root, **options).start()
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        service.stop()


@pytest.fixture(scope="session")
def private_redis(service_factory):
    return service_factory("redis")


@pytest.fixture(scope="session")
def private_memcached(service_factory):
    return service_factory("memcached")


@pytest.fixture(scope="session")
def private_mariadb(service_factory):
    return service_factory("mariadb")
