"""
The MariaDB 10.11 catalogue and the pure SQL of ``mariadb_replication`` (no Salt dunders, no server): the privileges
and their other spellings, the system databases, REQUIRE clauses, quoting, grants as SHOW GRANTS prints them, the
replica's settings (``ReplicaSpec``) and CHANGE MASTER, and status rows.

The inventory's validator (``rolestack_inventory``) takes its privilege names from here, so that an inventory
accepts exactly the names the execution module grants.
"""

import dataclasses
import re

from salt.exceptions import SaltInvocationError

try:
    from pymysql.converters import escape_string
except ImportError:  # the master (the inventory's validator, the db runner) quotes nothing: it needs no PyMySQL
    escape_string = None

SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
GTID_MODES = ("slave_pos", "current_pos")

# privileges MariaDB 10.11 knows, as SHOW GRANTS prints them: those that apply to one database (GRANT ... ON `db`.*),
# what an inventory's database user may hold, and the global ones; PRIVILEGE_ALIASES: the other spellings it accepts
DB_PRIVILEGES = frozenset(
    {
        "ALL PRIVILEGES",
        "ALTER",
        "ALTER ROUTINE",
        "CREATE",
        "CREATE ROUTINE",
        "CREATE TEMPORARY TABLES",
        "CREATE VIEW",
        "DELETE",
        "DELETE HISTORY",
        "DROP",
        "EVENT",
        "EXECUTE",
        "INDEX",
        "INSERT",
        "LOCK TABLES",
        "REFERENCES",
        "SELECT",
        "SHOW VIEW",
        "TRIGGER",
        "UPDATE",
    }
)
GLOBAL_PRIVILEGES = frozenset(
    {
        "BINLOG ADMIN",
        "BINLOG MONITOR",
        "BINLOG REPLAY",
        "CONNECTION ADMIN",
        "CREATE TABLESPACE",
        "CREATE USER",
        "FEDERATED ADMIN",
        "FILE",
        "PROCESS",
        "READ_ONLY ADMIN",
        "RELOAD",
        "REPLICATION MASTER ADMIN",
        "REPLICATION SLAVE",
        "REPLICATION SLAVE ADMIN",
        "SET USER",
        "SHOW DATABASES",
        "SHUTDOWN",
        "SLAVE MONITOR",
        "SUPER",
        "USAGE",
    }
)
PRIVILEGES = DB_PRIVILEGES | GLOBAL_PRIVILEGES
PRIVILEGE_ALIASES = {
    "ALL": "ALL PRIVILEGES",
    "REPLICATION CLIENT": "BINLOG MONITOR",
    "REPLICA MONITOR": "SLAVE MONITOR",
    "REPLICATION REPLICA": "REPLICATION SLAVE",
    "REPLICATION REPLICA ADMIN": "REPLICATION SLAVE ADMIN",
    "READ ONLY ADMIN": "READ_ONLY ADMIN",
}

# SHOW GLOBAL VARIABLES / STATUS read by status(), and how their values are typed
BOOL_VARIABLES = (
    "read_only",
    "log_bin",
    "log_slave_updates",
    "gtid_strict_mode",
    "rpl_semi_sync_master_enabled",
    "rpl_semi_sync_slave_enabled",
)
INT_VARIABLES = ("server_id", "gtid_domain_id")
TEXT_VARIABLES = (
    "gtid_current_pos",
    "gtid_slave_pos",
    "gtid_binlog_pos",
    "gtid_binlog_state",
    "binlog_format",
    "rpl_semi_sync_master_wait_point",
)
STATUS_VARIABLES = {
    "Rpl_semi_sync_master_clients": int,
    "Rpl_semi_sync_master_status": "bool",
    "Rpl_semi_sync_slave_status": "bool",
}
# SHOW SLAVE STATUS columns status() always carries (None when no source is configured)
REPLICA_COLUMNS = (
    "Slave_IO_Running",
    "Slave_SQL_Running",
    "Slave_IO_State",
    "Slave_SQL_Running_State",
    "Last_IO_Errno",
    "Last_IO_Error",
    "Last_SQL_Errno",
    "Last_SQL_Error",
    "Seconds_Behind_Master",
    "Master_Host",
    "Master_Port",
    "Master_User",
    "Master_Server_Id",
    "Master_SSL_Allowed",
    "Master_SSL_CA_File",
    "Master_SSL_Cert",
    "Master_SSL_Key",
    "Master_SSL_Verify_Server_Cert",
    "Using_Gtid",
    "Gtid_IO_Pos",
)
# threads kill_client_connections() never kills
REPLICATION_COMMANDS = frozenset({"Binlog Dump", "Binlog Dump GTID", "Slave_IO", "Slave_SQL", "Slave_worker"})
SYSTEM_USERS = frozenset({"system user", "event_scheduler"})


def literal(value):
    """An SQL literal of a Python value, escaped as PyMySQL does (the server's NO_BACKSLASH_ESCAPES off)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if escape_string is None:
            raise SaltInvocationError("quoting SQL values needs PyMySQL (salt-pip install PyMySQL)")
        return "'" + escape_string(value) + "'"
    raise SaltInvocationError(f"cannot use {value!r} as an SQL value")


def quote_identifier(name):
    """A database (or table) name quoted with backticks."""
    if not isinstance(name, str) or not name or "\0" in name or len(name) > 64 or name != name.rstrip():
        raise SaltInvocationError(f"invalid database name {name!r}")
    return "`" + name.replace("`", "``") + "`"


def account(user, host, literal=literal):
    """``'user'@'host'``, both quoted."""
    if not isinstance(user, str) or not user or len(user) > 128:
        raise SaltInvocationError(f"invalid user name {user!r}")
    if not isinstance(host, str) or not host or len(host) > 255:
        raise SaltInvocationError(f"invalid host {host!r} for user {user!r}")
    return f"{literal(user)}@{literal(host)}"


def normalize_require(require):
    """
    The TLS requirement of an account: None, "SSL", "X509" or a dict of ``issuer``/``subject``/``cipher``.
    Accepts those, "NONE", and the SQL form ``"SUBJECT '/CN=x' AND ISSUER '/CN=ca'"``.
    """
    if require is None or (isinstance(require, str) and require.strip().upper() in ("", "NONE")):
        return None
    if isinstance(require, dict):
        unknown = set(require) - {"issuer", "subject", "cipher"}
        if unknown or not require:
            raise SaltInvocationError(f"require takes issuer, subject and cipher, not {sorted(unknown) or require}")
        for key, value in require.items():
            if not isinstance(value, str) or not value:
                raise SaltInvocationError(f"require {key} must be a non-empty string")
        return dict(require)
    if not isinstance(require, str):
        raise SaltInvocationError(f"invalid require {require!r}")
    text = require.strip()
    if text.upper() in ("SSL", "X509"):
        return text.upper()
    clauses = {}
    pattern = re.compile(r"\s*(ISSUER|SUBJECT|CIPHER)\s+'((?:[^'\\]|\\.|'')*)'\s*(AND\s+|$)", re.IGNORECASE)
    pos = 0
    while pos < len(text):
        match = pattern.match(text, pos)
        if not match or (not match.group(3) and match.end() != len(text)):
            raise SaltInvocationError(
                f"invalid require {require!r}: use SSL, X509, NONE, or ISSUER/SUBJECT/CIPHER '...' joined by AND"
            )
        value = re.sub(r"\\(.)", r"\1", match.group(2)).replace("''", "'")
        clauses[match.group(1).lower()] = value
        pos = match.end()
        if not match.group(3).strip():
            break
    if not clauses:
        raise SaltInvocationError(f"invalid require {require!r}")
    return clauses


def require_clause(require, literal=literal):
    """The ``REQUIRE ...`` clause of CREATE/ALTER USER for a normalized requirement."""
    if require is None:
        return "REQUIRE NONE"
    if isinstance(require, str):
        return f"REQUIRE {require}"
    order = ("issuer", "subject", "cipher")
    return "REQUIRE " + " AND ".join(f"{key.upper()} {literal(require[key])}" for key in order if key in require)


def as_text(value):
    """A str of a column value PyMySQL returned as bytes (binary collations)."""
    return value.decode() if isinstance(value, bytes) else value


def require_from_row(row):
    """The normalized requirement of a mysql.user row (ssl_type, x509_issuer, x509_subject, ssl_cipher)."""
    ssl_type = (row.get("ssl_type") or "").upper()
    if ssl_type == "ANY":
        return "SSL"
    if ssl_type == "X509":
        return "X509"
    if ssl_type == "SPECIFIED":
        found = {}
        for key, column in (("issuer", "x509_issuer"), ("subject", "x509_subject"), ("cipher", "ssl_cipher")):
            value = as_text(row.get(column) or b"")
            if value:
                found[key] = value
        return found
    return None


def privilege_name(text):
    """
    The name SHOW GRANTS prints for a privilege as written (any case, any spacing, another spelling such as ``ALL``
    or ``REPLICATION CLIENT``); whether it is a privilege at all is the caller's check (``PRIVILEGES``).
    """
    name = " ".join(text.upper().split())
    return PRIVILEGE_ALIASES.get(name, name)


def normalize_privileges(privileges):
    """A set of canonical privilege names from a list or a comma-separated string."""
    if isinstance(privileges, str):
        privileges = privileges.split(",")
    if not isinstance(privileges, list | tuple | set) or not privileges:
        raise SaltInvocationError(f"privileges must be a non-empty list, not {privileges!r}")
    result = set()
    for privilege in privileges:
        if not isinstance(privilege, str):
            raise SaltInvocationError(f"invalid privilege {privilege!r}")
        name = privilege_name(privilege)
        if name not in PRIVILEGES:
            raise SaltInvocationError(f"unknown privilege {privilege!r}")
        result.add(name)
    return result


def split_privileges(text):
    """Split ``SELECT (a, b), INSERT`` at the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


GRANT_RE = re.compile(
    r"^GRANT (?P<privs>.+?) ON (?:(?:PROCEDURE|FUNCTION|PACKAGE BODY|PACKAGE) )?"
    r"(?P<on>(?:\*|`(?:[^`]|``)*`)\.(?:\*|`(?:[^`]|``)*`)) TO "
)


def parse_grants(lines):
    """
    SHOW GRANTS lines as ``{"*.*": {"REPLICATION SLAVE"}, "`app`.*": {"SELECT", ...}}``; PROXY and role grants
    are left out, column privileges keep their column list (``"SELECT (`c`)"``).
    """
    grants = {}
    for line in lines:
        match = GRANT_RE.match(line)
        if not match or match.group("privs") == "PROXY":
            continue
        privs = {" ".join(priv.split()) for priv in split_privileges(match.group("privs"))} - {"USAGE"}
        grants.setdefault(match.group("on"), set()).update(privs)
    return grants


def grant_target(database):
    """The ``ON`` part of a grant: ``*.*`` for database ``*``, otherwise ```db`.*``."""
    return "*.*" if database == "*" else f"{quote_identifier(database)}.*"


def missing_privileges(wanted, held):
    """The wanted privileges the held set does not cover (ALL PRIVILEGES covers every one)."""
    if "ALL PRIVILEGES" in held:
        return set()
    return set(wanted) - set(held) - {"USAGE"}


def extra_privileges(wanted, held):
    """The held privileges beyond the wanted ones (ALL PRIVILEGES wanted covers every one)."""
    if "ALL PRIVILEGES" in wanted:
        return set()
    return set(held) - set(wanted) - {"USAGE"}


def validate_port(port, what="port"):
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"{what} must be a number, not {port!r}")
    if isinstance(port, bool) or not 0 < number < 65536:
        raise SaltInvocationError(f"{what} must be within 1-65535, not {port!r}")
    return number


def wait_seconds(timeout):
    """A number of seconds to wait (MASTER_GTID_WAIT): a number, not negative."""
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"timeout must be a number of seconds, not {timeout!r}")
    if timeout < 0:
        raise SaltInvocationError("timeout cannot be negative")
    return timeout


def check_read_only(enabled, lock_wait_timeout):
    """set_read_only()'s arguments: a bool, and a whole number of seconds >= 1."""
    if not isinstance(enabled, bool):
        raise SaltInvocationError(f"enabled must be True or False, not {enabled!r}")
    if isinstance(lock_wait_timeout, bool) or not isinstance(lock_wait_timeout, int) or lock_wait_timeout < 1:
        raise SaltInvocationError(
            f"lock_wait_timeout must be a whole number of seconds >= 1, not {lock_wait_timeout!r}"
        )


def user_names(names, what):
    """A list of user names from None, one name or a list."""
    if names is None:
        return []
    if isinstance(names, str):
        return [names]
    if not isinstance(names, list | tuple | set):
        raise SaltInvocationError(f"{what} must be a list of user names")
    return names


@dataclasses.dataclass(frozen=True)
class ReplicaSpec:
    """
    The source a replica replicates from and how: configure_replica's settings (TLS always, the source verified
    against ``ssl_ca``; GTID positioning). Built once from keyword settings (``validated`` checks and normalises
    them) and passed whole: to CHANGE MASTER, mysqldump and the stream, and back to keyword arguments of the
    execution functions (``source_args``) through salt calls.
    """

    master_host: str
    master_user: str
    master_password: str
    master_port: int = 3306
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    ssl_verify: bool = True
    use_gtid: str = "slave_pos"
    connect_retry: int = 10

    # what replica_settings() shows of a running replica (never the password) to compare a spec with
    SHOWN = ("master_host", "master_port", "master_user", "ssl_ca", "ssl_cert", "ssl_key", "ssl_verify", "use_gtid")
    # the source and the credentials to reach it, as source_binlog_state, configure_replica and provision_replica
    # take them
    SOURCE = ("master_host", "master_user", "master_password", "master_port", "ssl_ca", "ssl_cert", "ssl_key")

    @classmethod
    def validated(cls, **settings):
        """The spec of configure_replica's keyword ``settings``, checked (TLS is mandatory) and normalised."""
        spec = cls(**settings)
        for name in ("master_host", "master_user"):
            if not isinstance(getattr(spec, name), str) or not getattr(spec, name).strip():
                raise SaltInvocationError(f"{name} must be a non-empty string")
        if not isinstance(spec.master_password, str) or not spec.master_password:
            raise SaltInvocationError("master_password must be a non-empty string")
        if not spec.ssl_ca:
            raise SaltInvocationError("ssl_ca is required: replication always runs over TLS with a verified source")
        if bool(spec.ssl_cert) != bool(spec.ssl_key):
            raise SaltInvocationError("give both ssl_cert and ssl_key, or neither")
        use_gtid = str(spec.use_gtid).lower()
        if use_gtid not in GTID_MODES:
            raise SaltInvocationError(f"use_gtid must be one of {', '.join(GTID_MODES)}, not {use_gtid!r}")
        try:
            connect_retry = int(spec.connect_retry)
        except (TypeError, ValueError):
            raise SaltInvocationError(f"connect_retry must be a number of seconds, not {spec.connect_retry!r}")
        if connect_retry < 1:
            raise SaltInvocationError("connect_retry must be at least 1 second")
        return dataclasses.replace(
            spec,
            master_host=spec.master_host.strip(),
            master_port=validate_port(spec.master_port, "master_port"),
            ssl_cert=spec.ssl_cert or None,
            ssl_key=spec.ssl_key or None,
            ssl_verify=bool(spec.ssl_verify),
            use_gtid=use_gtid,
            connect_retry=connect_retry,
        )

    def source_args(self):
        """The source and the credentials to reach it, as keyword arguments of the execution functions."""
        return {name: getattr(self, name) for name in self.SOURCE}

    def shown(self):
        """The settings replica_settings() shows of a replica replicating as this spec says."""
        return {name: getattr(self, name) for name in self.SHOWN}

    def peer_connection(self, timeout):
        """``connection_*`` arguments reaching the source over verified TLS as the replication account."""
        names = ("host", "port", "user", "password")
        connection = {f"connection_{name}": getattr(self, f"master_{name}") for name in names}
        connection.update({f"connection_{name}": getattr(self, name) for name in ("ssl_ca", "ssl_cert", "ssl_key")})
        return dict(connection, connection_connect_timeout=timeout)


def change_master_sql(spec, literal=literal):
    """The CHANGE MASTER TO statement for validated settings; every value quoted by ``literal``."""
    return (
        "CHANGE MASTER TO "
        f"MASTER_HOST={literal(spec.master_host)}, "
        f"MASTER_PORT={int(spec.master_port)}, "
        f"MASTER_USER={literal(spec.master_user)}, "
        f"MASTER_PASSWORD={literal(spec.master_password)}, "
        f"MASTER_CONNECT_RETRY={int(spec.connect_retry)}, "
        "MASTER_SSL=1, "
        f"MASTER_SSL_CA={literal(spec.ssl_ca)}, "
        f"MASTER_SSL_CERT={literal(spec.ssl_cert or '')}, "
        f"MASTER_SSL_KEY={literal(spec.ssl_key or '')}, "
        f"MASTER_SSL_VERIFY_SERVER_CERT={1 if spec.ssl_verify else 0}, "
        f"MASTER_USE_GTID={spec.use_gtid}"
    )


def default_connection(rows):
    """The row of the default (unnamed) replication connection in SHOW ALL SLAVES STATUS, or None."""
    for row in rows:
        if row.get("Connection_name", "") == "":
            return row
    return None


def replica_configured(row):
    return bool(row and row.get("Master_Host"))


def is_on(value):
    return str(value).upper() in ("ON", "1", "YES", "TRUE")


def merge_status(replica_rows, variables, status_variables, binlog_dump_threads):
    """
    One dict from SHOW ALL SLAVES STATUS rows, SHOW GLOBAL VARIABLES and SHOW GLOBAL STATUS rows (each
    ``{"Variable_name", "Value"}``) and the number of binlog dump threads. Keys keep MariaDB's names.
    """
    values = {row["Variable_name"].lower(): row["Value"] for row in variables}
    merged = {}
    for name in BOOL_VARIABLES:
        merged[name] = is_on(values[name]) if name in values else None
    for name in INT_VARIABLES:
        merged[name] = int(values[name]) if values.get(name) not in (None, "") else None
    for name in TEXT_VARIABLES:
        merged[name] = values.get(name)
    found = {row["Variable_name"].lower(): row["Value"] for row in status_variables}
    for name, kind in STATUS_VARIABLES.items():
        value = found.get(name.lower())
        merged[name] = None if value is None else is_on(value) if kind == "bool" else kind(value)

    row = default_connection(replica_rows)
    for column in REPLICA_COLUMNS:
        merged[column] = None
    if row:
        merged.update(row)
    merged["replica_configured"] = replica_configured(row)
    merged["replica_connections"] = sorted(r.get("Connection_name", "") for r in replica_rows)
    merged["binlog_dump_threads"] = int(binlog_dump_threads)
    if merged["replica_configured"]:
        merged["role"] = "replica"
    elif merged["read_only"]:
        merged["role"] = "standalone"
    else:
        merged["role"] = "primary"
    return merged


def replica_settings_from_row(row):
    """configure_replica()'s arguments as SHOW SLAVE STATUS shows them (the password is never shown)."""
    if not replica_configured(row):
        return None
    return {
        "master_host": row["Master_Host"],
        "master_port": int(row["Master_Port"]),
        "master_user": row["Master_User"],
        "ssl": row.get("Master_SSL_Allowed") == "Yes",
        "ssl_ca": row.get("Master_SSL_CA_File") or None,
        "ssl_cert": row.get("Master_SSL_Cert") or None,
        "ssl_key": row.get("Master_SSL_Key") or None,
        "ssl_verify": row.get("Master_SSL_Verify_Server_Cert") == "Yes",
        "use_gtid": (row.get("Using_Gtid") or "No").lower(),
        "connect_retry": int(row.get("Connect_Retry") or 0),
    }


def lag_from_row(row):
    configured = replica_configured(row)
    io_running = bool(configured and row.get("Slave_IO_Running") == "Yes")
    sql_running = bool(configured and row.get("Slave_SQL_Running") == "Yes")
    return {
        "configured": configured,
        "io_running": io_running,
        "sql_running": sql_running,
        "replicating": io_running and sql_running,
        "seconds_behind_master": row.get("Seconds_Behind_Master") if configured else None,
        "last_io_error": (row.get("Last_IO_Error") or None) if configured else None,
        "last_sql_error": (row.get("Last_SQL_Error") or None) if configured else None,
    }


def health_problems(lag_info, max_lag_seconds):
    """Why a replica is unhealthy (pure): broken threads, errors, or lag beyond the limit."""
    problems = []
    if not lag_info.get("configured"):
        return ["no replication source is configured"]
    for thread, key in (("IO", "io_running"), ("SQL", "sql_running")):
        if not lag_info.get(key):
            problems.append(f"the {thread} thread is not running")
    for key in ("last_io_error", "last_sql_error"):
        if lag_info.get(key):
            problems.append(f"{key}: {lag_info[key]}")
    behind = lag_info.get("seconds_behind_master")
    if behind is not None and max_lag_seconds is not None and behind > max_lag_seconds:
        problems.append(f"{behind} s behind its source, more than the limit of {max_lag_seconds} s")
    return problems
