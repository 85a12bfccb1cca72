"""
The db runner's public functions: switchover, failover, rejoin and health over simulated db hosts (a stand-in for
the master's LocalClient and pillar) and a real git repository, the inventory commit, the highstate summary; the
lab runs them for real (tests/e2e/test_7_db_switchover.py). Its decisions are tested on their own in
tests/unit/test_rolestack_db_plan.py.
"""

import importlib.util
import subprocess
import sys

import pytest
import rolestack_gtid as gtid
import rolestack_inventory as logic
from salt.exceptions import CommandExecutionError

from tests.support.db_example import DB1
from tests.support.db_example import DB2
from tests.support.db_example import DB3
from tests.support.db_example import EXAMPLE
from tests.support.db_example import S1
from tests.support.db_example import S2
from tests.support.db_example import ZONE
from tests.support.db_example import pillar_of
from tests.support.db_example import three_db_inventory
from tests.support.paths import REPO


def _load_runner():
    spec = importlib.util.spec_from_file_location("db_runner", REPO / "_runners" / "db.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


db = _load_runner()


def test_highstate_summary():
    returns = {
        "db1": {
            "ret": {"a": {"result": True, "changes": {"x": 1}}, "b": {"result": True, "changes": {}}},
            "retcode": 0,
        },
        "db2": {"ret": {"a": {"result": False, "changes": {}, "comment": "boom", "__id__": "a"}}, "retcode": 2},
        "db3": {"ret": ["Pillar failed to render with the following messages:", "invalid inventory"], "retcode": 5},
    }
    got = db._highstate_summary(returns, ["db1", "db2", "db3", "db4"])
    assert got["db1"] == {"ok": True, "states": 2, "changed": 1, "failed": []}
    assert got["db2"]["failed"] == ["a: boom"]
    assert not got["db3"]["ok"] and "invalid inventory" in got["db3"]["error"]
    assert got["db4"] == {"ok": False, "error": "did not answer"}


# ---- the runner over simulated db hosts ----------------------------------------------------------


class FakeHosts:
    """db hosts as the runner sees them through LocalClient: a MariaDB state each, and the calls made."""

    def __init__(self, servers, down=()):
        self.servers = servers
        self.down = set(down)
        self.calls = []
        self.fail = {}

    # LocalClient
    def cmd(self, tgt, fun, arg=(), tgt_type="glob", kwarg=None, timeout=None, full_return=False, **_):
        targets = tgt if isinstance(tgt, list) else sorted(self.servers)
        out = {}
        for minion in targets:
            if minion in self.down:
                continue
            if isinstance(fun, list):
                rets, codes = {}, {}
                for name, args in zip(fun, arg, strict=True):
                    kwargs = next((a for a in args if isinstance(a, dict) and a.get("__kwarg__")), {})
                    plain = [a for a in args if not (isinstance(a, dict) and a.get("__kwarg__"))]
                    kwargs = {k: v for k, v in kwargs.items() if k != "__kwarg__"}
                    rets[name], codes[name] = self.one(minion, name, plain, kwargs)
                out[minion] = {"ret": rets, "retcode": codes}
            else:
                ret, code = self.one(minion, fun, list(arg), dict(kwarg or {}))
                out[minion] = {"ret": ret, "retcode": code}
        return out

    def cmd_iter_no_block(self, tgt, fun, arg=(), timeout=None, tgt_type="glob", kwarg=None, **_):
        for minion, ret in self.cmd(tgt, fun, arg, tgt_type, kwarg).items():
            yield None
            yield {minion: ret}

    def destroy(self):
        pass

    def one(self, minion, fun, args, kwargs):
        self.calls.append((minion, fun, args, kwargs))
        if (minion, fun) in self.fail:
            return f"ERROR: {self.fail[minion, fun]}", 1
        if fun == "state.highstate":
            return {"s": {"result": True, "changes": {}, "__id__": "s"}}, 0
        server = self.servers.get(minion)
        if fun == "mariadb_replication.fence_writes" and server is not None:
            # as the module: read_only ON (and connections killed), or a dead MariaDB's service stopped
            if server.get("dead"):
                server["stopped"] = True
                return {"fenced": "stopped", "killed": []}, 0
            server["read_only"] = True
            return {"fenced": "read_only", "killed": [{"id": 7}]}, 0
        if server is None or server.get("dead"):
            return "ERROR: cannot connect to MariaDB (socket /run/mysqld/mysqld.sock)", 1
        if fun == "mariadb_replication.status":
            return self.status(server), 0
        if fun == "mariadb_replication.set_read_only":
            server["read_only"] = kwargs["enabled"]
            return {"read_only": kwargs["enabled"]}, 0
        if fun == "mariadb_replication.kill_client_connections":
            return [], 0
        if fun == "mariadb_replication.wait_for_gtid":
            if gtid.at_least(server["slave_pos"], args[0]):
                return True, 0
            return f"ERROR: timed out after {kwargs['timeout']}s waiting for GTID position {args[0]}", 1
        if fun == "mariadb_replication.promote":
            self.promoted_after_fence = [m for m, f, _a, _k in self.calls if f.endswith("fence_writes")]
            # as the module: wait (when given), RESET SLAVE ALL, read_only OFF; nothing after a failed step
            if args and not gtid.at_least(server["slave_pos"], args[0]):
                return f"ERROR: timed out after {kwargs['timeout']}s waiting for GTID position {args[0]}", 1
            server.update(running=False, source=None, read_only=False)
            return {"applied": args[0] if args else None, "read_only": False}, 0
        if fun in ("mariadb_replication.reset_replica", "mariadb_replication.stop_replica"):
            server["running"] = False
            if fun == "mariadb_replication.reset_replica":
                server["source"] = None
            return True, 0
        if fun == "mariadb_replication.configure_replica":
            if kwargs.get("slave_pos_from_binlog"):
                server["slave_pos"] = db.gtid.resume_position(server["binlog"], server["slave_pos"])
            server.update(source=kwargs["master_host"].split(".")[0], running=True, use_gtid="slave_pos")
            return {"master_host": kwargs["master_host"]}, 0
        if fun == "mariadb_replication.start_replica":
            server["running"] = True
            return {"replicating": True}, 0
        if fun == "mariadb_replication.replica_settings":
            return ({"master_host": server["source"]} if server["source"] else None), 0
        raise AssertionError(f"unexpected call {fun}")

    @staticmethod
    def status(server):
        replica = server["source"] is not None
        role = "replica" if replica else "standalone" if server["read_only"] else "primary"
        running = "Yes" if server["running"] else "No"
        return {
            "role": role,
            "read_only": server["read_only"],
            "Master_Host": f"{server['source']}.{ZONE}" if replica else None,
            "Slave_IO_Running": (server.get("io") or running) if replica else None,
            "Slave_SQL_Running": running if replica else None,
            "Seconds_Behind_Master": 0 if replica and server["running"] else None,
            "gtid_current_pos": server["binlog"] or server["slave_pos"],
            "gtid_slave_pos": server["slave_pos"],
            "gtid_binlog_pos": server["binlog"],
            "gtid_binlog_state": server.get("binlog_state", server["binlog"]),
            "Gtid_IO_Pos": server.get("io_pos", server["slave_pos"]) if replica else "",
        }


def server(source=None, read_only=True, binlog="", slave="", **extra):
    return dict(source=source, read_only=read_only, running=source is not None, binlog=binlog, slave_pos=slave, **extra)


@pytest.fixture
def platform(monkeypatch, tmp_path):
    """The runner's dunders, a git pillar repository with the example inventory, and simulated db hosts."""

    def make(servers, text=EXAMPLE, down=(), **master_config):
        repo = tmp_path / "pillar"
        if not repo.exists():
            repo.mkdir()
            git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
            subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
            (repo / "inventory.yaml").write_text(text)
            subprocess.run([*git, "add", "-A"], check=True)
            subprocess.run([*git, "commit", "-q", "-m", "inventory"], check=True)
        hosts = FakeHosts(servers, down)
        names = list(logic.load_yaml(text)["hosts"])

        def show_pillar(minion):
            committed = subprocess.run(
                ["git", "-C", str(repo), "show", "main:inventory.yaml"], capture_output=True, text=True, check=True
            ).stdout
            return {"rolestack": pillar_of(minion, committed)}

        opts = {
            "__role": "master",
            "id": "salt",
            "ext_pillar": [{"rolestack": {"git": {"repo": str(repo), "ref": "main", "path": "inventory.yaml"}}}],
            **master_config,
        }
        monkeypatch.setattr(db, "__opts__", opts, raising=False)
        monkeypatch.setattr(db, "__salt__", {"pillar.show_pillar": show_pillar}, raising=False)
        monkeypatch.setattr(db, "__context__", {}, raising=False)
        monkeypatch.setattr(db.salt.client, "get_local_client", lambda mopts=None: hosts)
        monkeypatch.setattr(db, "_accepted", lambda: sorted(names))
        hosts.repo = repo
        return hosts

    return make


def committed(repo):
    return subprocess.run(["git", "-C", str(repo), "show", "main:inventory.yaml"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def log_message(repo):
    return subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%s"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_switchover_blocks_writes_until_the_new_primary_caught_up(platform):
    pos = f"0-{S1}-100"
    hosts = platform(
        {DB1: server(read_only=False, binlog=pos, slave=f"0-{S2}-50"), DB2: server(source=DB1, binlog=pos, slave=pos)}
    )
    ret = db.switchover(DB2)
    assert ret["old"] == DB1 and ret["new"] == DB2 and ret["problems"] == [], ret
    assert ret["write_block_seconds"] >= 0 and ret["gtid_binlog_pos"] == pos
    order = [(minion, fun.split(".")[-1]) for minion, fun, _args, _kwargs in hosts.calls]
    block = order.index((DB1, "set_read_only"))
    # the new primary waits for the old one's last position, then takes writes, in one call
    promote = order.index((DB2, "promote"))
    assert promote > block and hosts.calls[promote][2] == [pos]
    # the old primary replicates from where its own binary log stands, not from its stale gtid_slave_pos
    configure_db1 = next(k for m, f, _a, k in hosts.calls if m == DB1 and f.endswith("configure_replica"))
    assert configure_db1["slave_pos_from_binlog"] is True
    assert hosts.servers[DB1]["slave_pos"] == pos and hosts.servers[DB1]["source"] == DB2
    assert hosts.servers[DB1]["read_only"] and not hosts.servers[DB2]["read_only"]
    assert hosts.servers[DB2]["source"] is None
    configure = next(k for m, f, _a, k in hosts.calls if f.endswith("configure_replica"))
    assert configure["master_host"] == f"db2.{ZONE}" and configure["master_user"] == "repl"
    assert configure["ssl_cert"] == "/etc/mysql/ssl/client.pem" and configure["master_password"]
    # the inventory commit, and the highstate that follows it
    assert log_message(hosts.repo) == "db: switch masterdb from db1-masterdb to db2"
    assert logic.load_yaml(committed(hosts.repo))["hosts"][DB2]["roles"] == ["db", "masterdb"]
    assert ret["inventory"]["commit"] and set(ret["highstate"]) == set(logic.load_yaml(EXAMPLE)["hosts"])
    # the CA's highstate comes first, in a wave of its own: the new masterdb's certificate must be signed under the
    # policy that names it masterdb, loaded by that highstate
    highstated = [minion for minion, fun, _a, _k in hosts.calls if fun == "state.highstate"]
    assert highstated[0] == "salt", highstated


def test_switchover_that_cannot_catch_up_gives_the_writes_back(platform):
    hosts = platform({DB1: server(read_only=False, binlog=f"0-{S1}-100"), DB2: server(source=DB1, slave=f"0-{S1}-99")})
    with pytest.raises(CommandExecutionError, match=r"aborted: .*timed out.*db1-masterdb takes writes again"):
        db.switchover(DB2, timeout=1)
    assert not hosts.servers[DB1]["read_only"]
    assert hosts.servers[DB2]["source"] == DB1 and hosts.servers[DB2]["read_only"]
    assert log_message(hosts.repo) == "inventory"  # nothing committed


def test_switchover_without_inventory_update_warns_that_the_inventory_disagrees(platform):
    pos = f"0-{S1}-100"
    hosts = platform({DB1: server(read_only=False, binlog=pos), DB2: server(source=DB1, slave=pos)})
    ret = db.switchover(DB2, update_inventory=False)
    assert "highstate" in ret and "skipped" in ret["highstate"]
    assert any("commit the move of masterdb to db2" in problem for problem in ret["problems"])
    assert db.__context__["retcode"] == 1
    assert not any(fun == "state.highstate" for _m, fun, _a, _k in hosts.calls)


@pytest.mark.parametrize("dead", ["mariadb", "host"])
def test_failover_promotes_the_most_advanced_replica(platform, dead, tmp_path):
    text = three_db_inventory()
    fenced = tmp_path / "fenced"
    hosts = platform(
        {
            DB1: server(read_only=False, binlog=f"0-{S1}-100", dead=True),
            DB2: server(source=DB1, slave=f"0-{S1}-98", io="Connecting"),
            DB3: server(source=DB1, slave=f"0-{S1}-100", io="Connecting"),
        },
        text,
        down=[DB1] if dead == "host" else [],
        rolestack_db_fence_command=fence_hook(fenced),
    )
    dry = db.failover(dry_run=True)
    assert dry["would_promote"] == DB3 and dry["promoted"] is None
    assert hosts.servers[DB3]["source"] == DB1  # nothing changed
    ret = db.failover()
    assert ret["promoted"] == DB3 and ret["old"] == DB1 and ret["candidates"] == [DB2, DB3]
    assert ret["positions"] == {DB2: f"0-{S1}-98", DB3: f"0-{S1}-100"}
    assert hosts.servers[DB3]["source"] is None and not hosts.servers[DB3]["read_only"]
    assert hosts.servers[DB2]["source"] == DB3
    assert log_message(hosts.repo) == "db: fail over masterdb from db1-masterdb to db3"
    assert DB1 not in ret["highstate"]  # the dead host is left alone
    assert "db.rejoin db1-masterdb" in ret["old_primary"]
    # fenced before the promotion: through salt when its minion answers, else by the master's fencing hook
    if dead == "mariadb":
        assert hosts.servers[DB1]["stopped"] and hosts.promoted_after_fence == [DB1] and not fenced.exists()
        assert ret["fence"].startswith("db1-masterdb fenced by salt"), ret["fence"]
    else:
        assert fenced.read_text() == DB1 and ret["fence"].startswith("db1-masterdb fenced by rolestack_db_fence_")


def fence_hook(record, status=0):
    """A fencing command that records the host it was given, exiting with ``status``."""
    script = f"import sys; open({str(record)!r}, 'w').write(sys.argv[1]); sys.exit({status})"
    return [sys.executable, "-c", script, "{host}"]


def dead_host_platform(platform, **master_config):
    return platform(
        {
            DB1: server(read_only=False, binlog=f"0-{S1}-100", dead=True),
            DB2: server(source=DB1, slave=f"0-{S1}-100", io="Connecting"),
        },
        down=[DB1],
        **master_config,
    )


def test_failover_without_a_way_to_fence_a_silent_primary_is_refused(platform, tmp_path):
    hosts = dead_host_platform(platform)
    with pytest.raises(CommandExecutionError) as refused:
        db.failover()
    message = str(refused.value)
    for part in ("failover refused: db1-masterdb could not be fenced", "no rolestack_db_fence_command",
                 "keep", "salt-run db.failover force=True"):  # fmt: skip
        assert part.replace("keep", "acknowledge the writes") in message, (part, message)
    assert hosts.servers[DB2]["source"] == DB1 and hosts.servers[DB2]["read_only"]  # nothing promoted
    assert log_message(hosts.repo) == "inventory"
    # a hook that cannot confirm the host is off refuses too, and says what it answered
    hosts = dead_host_platform(platform, rolestack_db_fence_command=fence_hook(tmp_path / "tried", status=3))
    with pytest.raises(
        CommandExecutionError, match=r"could not be fenced \(salt: the minion did not answer; .*exit status 3"
    ):
        db.failover()
    assert (tmp_path / "tried").read_text() == DB1
    assert hosts.servers[DB2]["source"] == DB1 and hosts.servers[DB2]["read_only"]


def test_failover_forced_promotes_an_unfenced_primary_and_says_so(platform):
    hosts = dead_host_platform(platform)
    ret = db.failover(force=True)
    assert ret["promoted"] == DB2 and not hosts.servers[DB2]["read_only"]
    assert ret["fence"].startswith("db1-masterdb NOT fenced") and "force=True" in ret["fence"], ret["fence"]


def test_undo_never_gives_writes_back_before_the_target_is_read_only(platform):
    # the target cannot catch up, and cannot be made read-only again: the old primary stays read-only
    hosts = platform({DB1: server(read_only=False, binlog=f"0-{S1}-100"), DB2: server(source=DB1, slave=f"0-{S1}-99")})
    hosts.fail[DB2, "mariadb_replication.set_read_only"] = "MariaDB error 1205: Lock wait timeout exceeded"
    with pytest.raises(
        CommandExecutionError, match=r"db2 could not be confirmed read-only .*db1-masterdb stays read-only"
    ):
        db.switchover(DB2, timeout=1)
    assert hosts.servers[DB1]["read_only"]
    # when it can, the old primary gets writes back only after the target's read_only was read back ON
    hosts = platform({DB1: server(read_only=False, binlog=f"0-{S1}-100"), DB2: server(source=DB1, slave=f"0-{S1}-99")})
    with pytest.raises(CommandExecutionError, match="db1-masterdb takes writes again"):
        db.switchover(DB2, timeout=1)
    order = [(minion, fun.split(".")[-1], kwargs.get("enabled")) for minion, fun, _a, kwargs in hosts.calls]
    writable = order.index((DB1, "set_read_only", False))
    confirmed = max(i for i, call in enumerate(order) if call[:2] == (DB2, "status"))
    assert order.index((DB2, "set_read_only", True)) < confirmed < writable, order


def test_rejoin_an_old_primary_whose_transactions_the_new_one_holds_in_its_slave_position(platform):
    # db2 was provisioned by mariabackup (db1's GTIDs in its gtid_slave_pos) and promoted before it logged any
    hosts = platform(
        {
            DB1: server(binlog=f"0-{S1}-10"),
            DB2: server(read_only=False, binlog="", slave=f"0-{S1}-10", binlog_state=""),
        }
    )
    ret = db.rejoin(DB1)
    assert ret["changed"] and hosts.servers[DB1]["source"] == DB2
    # and a switchover back to db1 is not refused as a fork
    hosts.servers[DB1].update(running=True)
    assert db.switchover(DB1)["new"] == DB1


def test_rejoin_refuses_an_old_primary_with_its_own_transactions(platform):
    platform(
        {
            DB1: server(binlog=f"0-{S1}-12"),
            DB2: server(read_only=False, binlog=f"0-{S2}-12", binlog_state=f"0-{S1}-10,0-{S2}-12"),
        }
    )
    with pytest.raises(CommandExecutionError, match=r"never had \(0-168430091-12.*make lab-replace HOST=db1-masterdb"):
        db.rejoin(DB1)


def test_rejoin_an_old_primary_that_lost_nothing(platform):
    hosts = platform(
        {
            DB1: server(binlog=f"0-{S1}-10", slave=f"0-{S2}-9"),
            DB2: server(read_only=False, binlog=f"0-{S2}-12", binlog_state=f"0-{S1}-10,0-{S2}-12"),
        }
    )
    ret = db.rejoin(DB1)
    assert ret["changed"] and hosts.servers[DB1]["source"] == DB2 and hosts.servers[DB1]["slave_pos"] == f"0-{S1}-10"


def git_repo(path, text=EXAMPLE):
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "inventory.yaml").write_text(text)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "inventory"], check=True)
    return path


def test_commit_on_a_bare_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "__opts__", {"id": "salt"}, raising=False)
    work = git_repo(tmp_path / "work")
    bare = tmp_path / "pillar.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    source = {"repo": str(bare), "ref": "main", "path": "inventory.yaml"}
    done = db._commit_inventory(source, DB1, DB2, "db: switch masterdb from db1-masterdb to db2")
    assert log_message(bare) == "db: switch masterdb from db1-masterdb to db2"
    assert done["commit"] != done["parent"]
    assert logic.load_yaml(committed(bare))["hosts"][DB2]["roles"] == ["db", "masterdb"]


def test_commit_through_the_work_tree_and_refusal_of_local_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "__opts__", {"id": "salt"}, raising=False)
    repo = git_repo(tmp_path / "pillar")
    source = {"repo": str(repo), "ref": "main", "path": "inventory.yaml"}
    db._commit_inventory(source, DB1, DB2, "db: switch masterdb from db1-masterdb to db2")
    # the work tree follows the commit: an operator's next `git commit -a` does not undo the move
    assert (repo / "inventory.yaml").read_text() == committed(repo)
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""
    (repo / "inventory.yaml").write_text(committed(repo) + "# local edit\n")
    with pytest.raises(CommandExecutionError, match="has uncommitted changes"):
        db._commit_inventory(source, DB2, DB1, "db: switch masterdb from db2 to db1-masterdb")


def test_health_exits_non_zero_on_a_broken_replica(platform):
    pos = f"0-{S1}-100"
    platform({DB1: server(read_only=False, binlog=pos), DB2: server(source=DB1, slave=pos)})
    ret = db.health()
    assert ret["ok"] and ret["hosts"][DB2] == {"ok": True, "role": "replica", "replicating": True, "lag": 0,
                                               "problems": []}  # fmt: skip
    assert "retcode" not in db.__context__
    platform({DB1: server(read_only=False, binlog=pos), DB2: server(source=DB1, slave=pos, io="No")})
    ret = db.health(max_lag=5)
    assert not ret["ok"] and ret["max_lag"] == 5 and db.__context__["retcode"] == 1
    assert ret["hosts"][DB2]["problems"] == ["replication from db1-masterdb is broken (IO thread No, SQL thread Yes)"]
