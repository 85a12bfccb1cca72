"""
The server side's util (``_utils/rolestack_mariadb_server.py``): how ``connection_*`` arguments and the minion's
``mariadb.*`` configuration become PyMySQL settings (the statements themselves run against real servers in
tests/functional/test_mariadb_replication.py).
"""

import pytest
import rolestack_mariadb_backup as backup
import rolestack_mariadb_server as server
from salt.exceptions import SaltInvocationError

# --- connection settings ------------------------------------------------------------------------


def _settings(args, config=None):
    config = config or {}
    return server.connection_settings(args, config.get)


def test_connection_defaults_to_debian_socket_as_root():
    settings, where = _settings({})
    assert settings["unix_socket"] == "/run/mysqld/mysqld.sock"
    assert settings["user"] == "root"
    assert "password" not in settings
    assert "host" not in settings
    assert "ssl_ca" not in settings
    assert where == "socket /run/mysqld/mysqld.sock"


def test_connection_config_host_with_tls():
    config = {"host": "db1.example", "port": "3307", "user": "salt", "password": "pw", "ssl_ca": "/ca.pem"}
    settings, where = _settings({}, config)
    assert (settings["host"], settings["port"], settings["user"], settings["password"]) == (
        "db1.example",
        3307,
        "salt",
        b"pw",
    )
    assert settings["ssl_ca"] == "/ca.pem"
    assert "ssl_cert" not in settings
    assert settings["ssl_verify_cert"] is True
    assert settings["ssl_verify_identity"] is True
    assert where == "db1.example:3307"


def test_connection_arguments_win_over_config():
    config = {"host": "db1.example", "user": "salt"}
    settings, _ = _settings({"unix_socket": "/tmp/my.sock"}, config)
    assert settings["unix_socket"] == "/tmp/my.sock"
    assert "host" not in settings
    assert settings["user"] == "salt"  # not given as an argument: from the config
    settings, _ = _settings({"host": "127.0.0.1", "ssl_ca": "/ca.pem"}, {"unix_socket": "/x.sock"})
    assert settings["host"] == "127.0.0.1"
    assert "unix_socket" not in settings
    settings, _ = _settings({"unix_socket": "/s", "ssl_ca": "/ca.pem"})
    assert "ssl_ca" not in settings  # TLS is for TCP connections
    assert settings["ssl_disabled"] is True


def test_connection_password_is_sent_as_utf8():
    settings, _ = _settings({"password": "pässword"})
    assert settings["password"] == "pässword".encode()
    assert backup.client_options(settings)["password"] == "pässword"


def test_connection_args_filter():
    assert server.connection_args({"connection_user": "x", "__pub_fun": "y"}) == {"user": "x"}
    with pytest.raises(SaltInvocationError, match="connection_usr"):
        server.connection_args({"connection_usr": "x"})
    with pytest.raises(SaltInvocationError, match="hots"):
        server.connection_args({"hots": "x"})
