"""
The copies' util (``_utils/rolestack_mariadb_backup.py``): the backup's binlog position and the option files that
carry the commands' credentials (mariabackup, mbstream and mysqldump run for real in
tests/functional/test_mariadb_replication.py and test_backup_stream_security.py).
"""

import pytest
import rolestack_mariadb_backup as backup
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

# ---- the backup's binlog position and option files


def test_binlog_gtid():
    assert backup.binlog_gtid("mysql-bin.000001\t1020\t0-1-4\n") == "0-1-4"
    assert backup.binlog_gtid("mysql-bin.000001\t1020\t0-1-4,1-2-9") == "0-1-4,1-2-9"
    assert backup.binlog_gtid("mysql-bin.000001\t328\t") == ""
    with pytest.raises(CommandExecutionError):
        backup.binlog_gtid("garbage")


def test_option_file_quotes_values():
    text = backup.option_file(
        {"client": {"user": "dump", "password": "a#b\"c\\d'e", "socket": None, "ssl-verify-server-cert": True}}
    )
    assert text == '[client]\nuser="dump"\npassword="a#b\\"c\\\\d\'e"\nssl-verify-server-cert\n'
    with pytest.raises(SaltInvocationError):
        backup.option_file({"client": {"password": "two\nlines"}})


# ---- the backup stream's overlap of reading and writing ------------------------------------------------------
