"""
Private MariaDB servers for the replication tests: a small PKI (a CA, a server certificate for 127.0.0.1 and
localhost, a client certificate, and an unrelated CA with its own client), and ``Instance``, a private mariadbd
configured for GTID replication over TLS with those files. Used by tests/functional/test_mariadb_replication.py
and tests/functional/test_replica_divergence.py.
"""

import datetime
import ipaddress
import os
import signal
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rolestack_highstate import poll

from tests.support.services import PrivateMariaDB
from tests.support.services import wait_for

# ---- a small PKI


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path):
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o644)  # test keys: the server reads them as user mysql


def _certificate(subject, key, issuer, issuer_key, ca=False, sans=None, client=False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory):
    directory.mkdir()
    directory.chmod(0o755)
    files = {}

    def ca(label, cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(cn, key, cn, key, ca=True)
        files[f"{label}_ca"] = directory / f"{label}-ca.pem"
        files[f"{label}_ca"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key

    def leaf(label, cn, ca_cn, ca_key, **options):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(cn, key, ca_cn, ca_key, **options)
        files[f"{label}_cert"] = directory / f"{label}.pem"
        files[f"{label}_key"] = directory / f"{label}.key"
        files[f"{label}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files[f"{label}_key"])

    ca_key = ca("good", "Rolestack Test CA")
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    leaf("server", "db-server", "Rolestack Test CA", ca_key, sans=sans)
    leaf("client", "db-replica", "Rolestack Test CA", ca_key, client=True)
    wrong_key = ca("wrong", "Unrelated CA")
    leaf("wrong_client", "intruder", "Unrelated CA", wrong_key, client=True)
    return {label: str(path) for label, path in files.items()}


# ---- servers


def source_args(instance, pki, password, **overrides):
    """configure_replica's arguments for replicating from ``instance`` over verified TLS as ``repl``."""
    args = {
        "master_host": "127.0.0.1",
        "master_port": instance.port,
        "master_user": "repl",
        "master_password": password,
        "ssl_ca": pki["good_ca"],
        "ssl_cert": pki["client_cert"],
        "ssl_key": pki["client_key"],
        "connect_retry": 1,
    }
    args.update(overrides)
    return args


def mariadb_config(pki, server_id, read_only=False):
    return (
        f"log_bin = mysql-bin\nbinlog_format = ROW\ngtid_strict_mode = ON\nlog_slave_updates = ON\n"
        f"relay_log = relay-bin\nread_only = {'ON' if read_only else 'OFF'}\n"
        f"ssl_ca = {pki['good_ca']}\nssl_cert = {pki['server_cert']}\nssl_key = {pki['server_key']}\n"
    )


class Instance:
    """A private mariadbd and how the module reaches it."""

    def __init__(self, root, pki, server_id, read_only=False):
        self.server = PrivateMariaDB(root, server_id=server_id, extra_config=mariadb_config(pki, server_id, read_only))
        self.adopted_pid = None

    def start(self):
        self.server.start()
        return self

    @property
    def args(self):
        return {"connection_unix_socket": str(self.server.socket)}

    @property
    def port(self):
        return self.server.port

    def sql(self, statement, args=None):
        return self.server.sql(statement, args)

    def stop(self):
        self.server.stop()
        if self.adopted_pid:  # a server the module started (provision_replica start_command)
            with Suppress(ProcessLookupError):
                os.kill(self.adopted_pid, signal.SIGTERM)
            if not poll(self._adopted_exited, 30, interval=0.1):
                os.kill(self.adopted_pid, signal.SIGKILL)

    def _adopted_exited(self):
        try:
            return os.waitpid(self.adopted_pid, os.WNOHANG)[0] != 0
        except ChildProcessError:  # not our child (or reaped already): nothing to wait for here
            return True


class Suppress:
    def __init__(self, *errors):
        self.errors = errors

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, self.errors)


class Instances:
    """Starts private servers with one PKI (``instances(server_id, read_only)``); ``stop_all`` stops them, last first."""

    def __init__(self, root, pki):
        self.root, self.pki, self.started = root, pki, []

    def __call__(self, server_id, read_only=False):
        instance = Instance(self.root, self.pki, server_id, read_only)
        self.started.append(instance)
        return instance.start()

    def stop_all(self):
        for instance in reversed(self.started):
            instance.stop()


def make_host_pki(directory, source, clients):
    """
    A PKI whose certificates name hosts as the db role's do (CN the FQDN; subjectAltName the FQDN, the inventory
    name and the address), for the backup stream's peer checks: ``good_ca``, ``server_cert``/``server_key`` for
    ``source`` (a dict with name, fqdn, address; also valid for 127.0.0.1 and localhost, so ``mariadb_config``
    can use it), ``client_<name>_cert``/``_key`` for each of ``clients`` (dicts as ``source``), and from an
    unrelated CA ``wrong_server_cert``/``_key`` (naming 127.0.0.1) and ``wrong_client_<name>_cert``/``_key`` for
    the first client.
    """
    directory.mkdir()
    directory.chmod(0o755)
    files = {}

    def names(host):
        sans = [x509.DNSName(host["fqdn"]), x509.DNSName(host["name"])]
        return sans + [x509.IPAddress(ipaddress.ip_address(host["address"]))]

    def ca(label, cn):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{label}_ca"] = directory / f"{label}-ca.pem"
        files[f"{label}_ca"].write_bytes(
            _certificate(cn, key, cn, key, ca=True).public_bytes(serialization.Encoding.PEM)
        )
        return key

    def leaf(label, cn, ca_cn, ca_key, **options):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{label}_cert"] = directory / f"{label}.pem"
        files[f"{label}_key"] = directory / f"{label}.key"
        files[f"{label}_cert"].write_bytes(
            _certificate(cn, key, ca_cn, ca_key, **options).public_bytes(serialization.Encoding.PEM)
        )
        _write_key(key, files[f"{label}_key"])

    local = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    local = [name for name in local if name not in names(source)]
    good = ca("good", "Rolestack Test CA")
    leaf("server", source["fqdn"], "Rolestack Test CA", good, sans=names(source) + local)
    for host in clients:
        leaf(f"client_{host['name']}", host["fqdn"], "Rolestack Test CA", good, sans=names(host), client=True)
    wrong = ca("wrong", "Unrelated CA")
    leaf("wrong_server", source["fqdn"], "Unrelated CA", wrong, sans=names(source) + local)
    first = clients[0]
    leaf(f"wrong_client_{first['name']}", first["fqdn"], "Unrelated CA", wrong, sans=names(first), client=True)
    return {label: str(path) for label, path in files.items()}


def listening(port):
    """Whether something listens on 127.0.0.1:port (IPv4), without connecting (that would use up an accept)."""
    with open("/proc/net/tcp") as table:
        return any(
            line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A" for line in table.readlines()[1:]
        )


def serve_in_background(function, listen_port, **kwargs):
    """``function(**kwargs)`` (a serve_backup_stream) in a thread: (thread, outcome) once ``listen_port`` listens or it
    ended."""
    outcome = {}

    def run():
        try:
            outcome["result"] = function(**kwargs)
        except Exception as err:  # handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: listening(listen_port) or not thread.is_alive(), 15, f"something to listen on port {listen_port}")
    return thread, outcome
