"""
The MariaDB primary of a rolestack platform, from the salt master: see the replication state of every db host,
switch the primary (masterdb) to a replica, fail over when the primary died, bring an old primary back as a
replica, and check replication health.

The db hosts and the host the inventory names masterdb come from the master's own view of the pillar (the
``rolestack`` ext_pillar, compiled here: nothing is asked of a minion that may be dead). The work on the db hosts
is done by the ``mariadb_replication`` execution module through the master's LocalClient, over each host's
local socket. Replicas replicate from the primary's FQDN with GTID ``slave_pos`` over TLS: the account ``repl``
(``REQUIRE X509``, one per db host address, present on every host through replication), the password from the
inventory's ``replication_password`` secret, and each host's files ``/etc/mysql/ssl/{ca.pem,client.pem,client.key}``.

After a switchover or a failover the inventory must name the new primary before the next highstate (the db role
points every other db host at masterdb and makes masterdb writable). When the ext_pillar reads the inventory from
a git branch (``rolestack: {git: {repo, ref, path}}``), the runner commits that move itself (the masterdb role
moved between the two hosts' ``roles``; a host called ``*-masterdb`` gets explicit ``roles``), then highstates.

The decisions (the topology from the pillar, the platform's state, the refusals, the failover plan, the fencing
command, the inventory edit) are pure functions of ``_utils/rolestack_db_plan.py``; this module asks the hosts,
fences, runs git and the highstate.

See docs/roles/db.md ("Switch master", "Fail over", "Rejoin an old primary", "Health").
"""

import logging
import os
import subprocess
import tempfile
import time

import salt.client
import salt.key
from salt.exceptions import CommandExecutionError

MISSING_UTIL = None
try:  # a util is a top-level module, synced or pip-installed: docs/development.md, "Importing utils"
    import rolestack_db_plan as dbplan
    import rolestack_gtid as gtid
    import rolestack_highstate as highstate_logic
    import rolestack_mariadb_sql as sql
except ImportError as err:  # __virtual__ names it
    MISSING_UTIL = err.name

log = logging.getLogger(__name__)

__virtualname__ = "db"

SSL_DIR = "/etc/mysql/ssl"
REPLICATION_USER = "repl"
MASTER_PORT = 3306
# seconds a db host has to answer a quick call (status, read_only...), and then to say whether it still runs the
# job (salt's find_job), before it counts as unreachable: a dead minion costs their sum
QUICK_TIMEOUT = 5
GATHER_JOB_TIMEOUT = 5
# a failover waits this long for the dead primary's minion once the others answered (a live one takes ~0.5 s);
# whether its MariaDB is dead is decided by the replicas (their IO threads), not by this
FAILOVER_GRACE = 2
NO_ANSWER = "the minion did not answer"
REBUILD_HINT = None if MISSING_UTIL else gtid.REBUILD_HINT


def __virtual__():
    if __opts__.get("__role") != "master":
        return (False, "db: a master runner (salt-run db.<function>)")
    if MISSING_UTIL:
        return (False, f"db: the util {MISSING_UTIL} is missing (salt-run saltutil.sync_all, or pip install rolestack)")
    return __virtualname__


# ---- a highstate's returns ------------------------------------------------------------------------


def _highstate_summary(returns, targets):
    """Per minion: ``{"ok", "states", "changed", "failed": [...]}`` or ``{"ok": False, "error"}``."""
    summary = {}
    for minion, got in highstate_logic.summarize_all(returns, targets, full_return=True).items():
        if "error" in got:
            summary[minion] = {"ok": False, "error": got["error"][:2000]}
            continue
        failed = [f"{sid}: {comment[:300]}" for sid, comment in got["failed"]]
        summary[minion] = {"ok": not failed, "states": got["states"], "changed": len(got["changed"]), "failed": failed}
    return summary


# ---- the master side: pillar, LocalClient, git ---------------------------------------------------


def _progress(message):
    log.info("db: %s", message)
    event = globals().get("__jid_event__")
    if event is not None:
        try:
            event.fire_event({"message": message}, "progress")
        except Exception:  # pylint: disable=broad-except
            pass


def _accepted():
    with salt.key.get_key(__opts__) as skey:
        return skey.list_status("accepted").get("minions", [])


def _rolestack_pillar(minion):
    pillar = __salt__["pillar.show_pillar"](minion)
    if pillar.get("_errors"):
        raise CommandExecutionError(
            f"the pillar of {minion} does not render: " + "; ".join(map(str, pillar["_errors"]))
        )
    rolestack = pillar.get("rolestack")
    if not isinstance(rolestack, dict):
        raise CommandExecutionError(f"{minion} has no rolestack pillar: is the rolestack ext_pillar configured?")
    return rolestack


def _topology():
    accepted = _accepted()
    if not accepted:
        raise CommandExecutionError("the master has accepted no minion key")
    common = _rolestack_pillar(accepted[0])
    masterdb = (common.get("hosts_entries") or {}).get("masterdb")
    if not masterdb:
        raise CommandExecutionError("the inventory has no masterdb (no db hosts?)")
    return dbplan.topology_from_pillar(_rolestack_pillar(masterdb["name"]), accepted)


def _run(minions, fun, args=(), kwargs=None, timeout=QUICK_TIMEOUT, grace=None):
    """
    ``{minion: (True, return) or (False, error text)}`` of one function on a list of minions. With ``grace``, a
    minion that has not answered ``grace`` seconds after the others did counts as not answering: a dead host costs
    that instead of salt's timeout plus its job lookup.
    """
    minions = list(minions)
    client = salt.client.get_local_client(mopts=__opts__)
    returns = {}
    try:
        if grace is None:
            returns = client.cmd(
                minions,
                fun,
                list(args),
                tgt_type="list",
                kwarg=kwargs or {},
                timeout=timeout,
                full_return=True,
                gather_job_timeout=GATHER_JOB_TIMEOUT,
            )
        else:
            started = time.monotonic()
            answered_at = None
            for ret in client.cmd_iter_no_block(
                minions, fun, list(args), timeout=timeout, tgt_type="list", kwarg=kwargs or {},
                gather_job_timeout=GATHER_JOB_TIMEOUT,
            ):  # fmt: skip
                if ret:
                    returns.update(ret)
                missing = [minion for minion in minions if minion not in returns]
                if not missing:
                    break
                now = time.monotonic()
                if len(missing) < len(minions) and answered_at is None:
                    answered_at = now
                if now - (answered_at or started) > grace and now - started > grace:
                    break
                time.sleep(0.02)
    finally:
        client.destroy()
    out = {}
    for minion in minions:
        ret = returns.get(minion)
        if not isinstance(ret, dict) or "ret" not in ret or ret.get("out") == "no_return":
            out[minion] = (False, NO_ANSWER)
        elif ret.get("retcode", 0):
            out[minion] = (False, str(ret["ret"]).removeprefix("ERROR: "))
        else:
            out[minion] = (True, ret["ret"])
    return out


def _call(topology, host, fun, *args, wait=QUICK_TIMEOUT, **kwargs):
    """One function on one db host; its return, or CommandExecutionError naming the host and the error."""
    minion = topology["hosts"][host]["minion"] if host in topology["hosts"] else host
    ok, value = _run([minion], fun, args, kwargs, wait)[minion]
    if not ok:
        raise CommandExecutionError(f"{host}: {fun}: {value}")
    return value


def _call_many(topology, host, calls, wait=QUICK_TIMEOUT):
    """
    Several functions on one db host in one job, in order (one round trip instead of several: the write block
    is mostly round trips). Each runs even when an earlier one failed: use it only where that is harmless.
    Returns their returns; raises CommandExecutionError naming the first that failed.
    """
    minion = topology["hosts"][host]["minion"]
    funs = [fun for fun, _args, _kwargs in calls]
    args = [[*call_args, {**call_kwargs, "__kwarg__": True}] for _fun, call_args, call_kwargs in calls]
    returns = _run_job(minion, funs, args, wait)
    ret = returns.get(minion)
    if not isinstance(ret, dict) or not isinstance(ret.get("ret"), dict):
        raise CommandExecutionError(f"{host}: {', '.join(funs)}: the minion did not answer")
    retcodes = ret.get("retcode") if isinstance(ret.get("retcode"), dict) else {}
    values = []
    for fun in funs:
        value = ret["ret"].get(fun)
        if fun not in ret["ret"] or retcodes.get(fun) != 0:
            raise CommandExecutionError(f"{host}: {fun}: {str(value).removeprefix('ERROR: ').strip()[-1500:]}")
        values.append(value)
    return values


def _run_job(minion, funs, args, wait):
    client = salt.client.get_local_client(mopts=__opts__)
    try:
        return client.cmd(
            [minion], funs, args, tgt_type="list", timeout=wait, full_return=True, gather_job_timeout=GATHER_JOB_TIMEOUT
        )
    finally:
        client.destroy()


def _collect(topology, hosts=None, timeout=QUICK_TIMEOUT, grace=None):
    """Each db host's ``mariadb_replication.status`` (all by default): ``{host: {"status": ...} or {"error": ...}}``."""
    by_minion = {host["minion"]: name for name, host in topology["hosts"].items() if hosts is None or name in hosts}
    results = {}
    answers = _run(list(by_minion), "mariadb_replication.status", timeout=timeout, grace=grace)
    for minion, (ok, value) in answers.items():
        results[by_minion[minion]] = {"status": value} if ok else {"error": value}
    return results


def _replica_args(topology, source):
    """configure_replica's keyword arguments pointing a db host at ``source`` (the spec the module builds too)."""
    spec = sql.ReplicaSpec(
        master_host=topology["hosts"][source]["fqdn"],
        master_user=REPLICATION_USER,
        master_password=topology["password"],
        master_port=MASTER_PORT,
        ssl_ca=f"{SSL_DIR}/ca.pem",
        ssl_cert=f"{SSL_DIR}/client.pem",
        ssl_key=f"{SSL_DIR}/client.key",
    )
    return spec.source_args()


def _applied_state(topology, host):
    """
    Everything a host has applied, as a binlog state: its ``gtid_binlog_state`` (the last GTID of every (domain,
    server) its binary log ever held) and its ``gtid_slave_pos`` (a replica provisioned by mariabackup holds the
    copied GTIDs there only).
    """
    status = _call(topology, host, "mariadb_replication.status")
    return gtid.applied(status.get("gtid_binlog_state") or "", status.get("gtid_slave_pos") or "")


def _point_at(topology, host, source, timeout, from_binlog=False):
    """Make ``host`` a read-only replica of ``source`` and wait until both replica threads run."""
    _call(topology, host, "mariadb_replication.set_read_only", enabled=True)
    # from_binlog: gtid_slave_pos := gtid_binlog_pos after STOP SLAVE, so a server that wrote transactions itself
    # (an old primary) replicates from exactly where it stands, not from its stale gtid_slave_pos
    _call(topology, host, "mariadb_replication.configure_replica", **_replica_args(topology, source),
          slave_pos_from_binlog=from_binlog)  # fmt: skip
    return _call(topology, host, "mariadb_replication.start_replica", timeout=timeout, wait=timeout + 15)


def _repoint(topology, hosts, source, old, timeout, reachable):
    """Re-point ``hosts`` at ``source`` (``old``, a former primary, from its own binary log); errors collected."""
    replicas, problems = {}, []
    for host in hosts:
        if host not in reachable:
            replicas[host] = "not re-pointed: unreachable (its next highstate points it at the new primary)"
            problems.append(f"{host}: {replicas[host]}")
            continue
        try:
            _point_at(topology, host, source, timeout, from_binlog=host == old)
            replicas[host] = f"replicating from {source}"
        except CommandExecutionError as err:
            replicas[host] = f"not replicating: {err}"
            problems.append(f"{host}: {err}")
    running = [host for host, state in replicas.items() if state.startswith("replicating")]
    if running:
        # threads running is not enough: each replica applies what the new primary has logged so far
        position = _call(topology, source, "mariadb_replication.status")["gtid_binlog_pos"]
        for host in running if position else ():
            try:
                _call(topology, host, "mariadb_replication.wait_for_gtid", position, timeout=timeout, wait=timeout + 15)
                replicas[host] = f"replicating from {source}, applied {position}"
            except CommandExecutionError as err:
                replicas[host] = f"replicating from {source} but behind: {err}"
                problems.append(f"{host}: {replicas[host]}")
    return replicas, problems


def _git(repo, *args, input=None, env=None):
    try:
        proc = subprocess.run(
            ["git", "-C", repo, *args],
            capture_output=True,
            text=True,
            input=input,
            env=env,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CommandExecutionError(f"git {args[0]} in {repo}: {err}") from err
    if proc.returncode:
        raise CommandExecutionError(f"git {' '.join(args[:3])} in {repo}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _git_env(repo):
    env = dict(os.environ)
    try:
        _git(repo, "config", "user.email")
    except CommandExecutionError:
        who = f"salt-master {__opts__.get('id', '')}".strip()
        env.update(
            GIT_AUTHOR_NAME=who,
            GIT_COMMITTER_NAME=who,
            GIT_AUTHOR_EMAIL="salt-master@rolestack.invalid",
            GIT_COMMITTER_EMAIL="salt-master@rolestack.invalid",
        )
    return env


def _commit_inventory(source, old, new, message):
    """Commit the move of masterdb from old to new on the ext_pillar's branch; what was done."""
    repo, ref, path = source["repo"], source["ref"], source["path"]
    parent = _git(repo, "rev-parse", "--verify", f"refs/heads/{ref}^{{commit}}").strip()
    text = _git(repo, "show", f"{parent}:{path}")
    edited = dbplan.move_masterdb(text, old, new)
    env = _git_env(repo)
    bare = _git(repo, "rev-parse", "--is-bare-repository").strip() == "true"
    head = ""
    if not bare:
        try:
            head = _git(repo, "symbolic-ref", "-q", "HEAD").strip()
        except CommandExecutionError:
            head = ""
    if head == f"refs/heads/{ref}":
        # the branch is checked out: commit through the work tree, so that it stays in step
        top = _git(repo, "rev-parse", "--show-toplevel").strip()
        if _git(repo, "status", "--porcelain", "--", path).strip():
            raise CommandExecutionError(
                f"{os.path.join(top, path)} has uncommitted changes: commit or discard them, then commit the move of "
                f"masterdb from {old} to {new} by hand (the database switch is done)"
            )
        with open(os.path.join(top, path), "w", encoding="utf-8") as handle:
            handle.write(edited)
        _git(repo, "commit", "-q", "-m", message, "--", path, env=env)
    else:
        # a bare repository, or another branch checked out: write the commit without a work tree
        mode = _git(repo, "ls-tree", parent, "--", path).split()[0]
        blob = _git(repo, "hash-object", "-w", "--stdin", input=edited).strip()
        with tempfile.TemporaryDirectory(prefix="rolestack-db-") as work:
            index_env = dict(env, GIT_INDEX_FILE=os.path.join(work, "index"))
            _git(repo, "read-tree", parent, env=index_env)
            _git(repo, "update-index", "--cacheinfo", f"{mode},{blob},{path}", env=index_env)
            tree = _git(repo, "write-tree", env=index_env).strip()
        commit = _git(repo, "commit-tree", tree, "-p", parent, "-m", message, env=env).strip()
        _git(repo, "update-ref", f"refs/heads/{ref}", commit, parent)
    commit = _git(repo, "rev-parse", "--verify", f"refs/heads/{ref}^{{commit}}").strip()
    return {"repo": repo, "ref": ref, "path": path, "commit": commit, "parent": parent, "message": message}


def _update_inventory(topology, old, new, verb):
    """Move masterdb in the inventory when it is in git; returns (result, inventory now names new)."""
    if topology["masterdb"] == new:
        return {"unchanged": f"the inventory names {new} masterdb already"}, True
    source = dbplan.git_source(__opts__)
    if source is None:
        return {
            "unchanged": f"the rolestack ext_pillar does not read a git branch: move masterdb from "
            f"{topology['masterdb']} to {new} in the inventory by hand before the next highstate"
        }, False
    inventory_old = topology["masterdb"] or old
    message = f"db: {verb} masterdb from {inventory_old} to {new}"
    return _commit_inventory(source, inventory_old, new, message), True


def _highstate(targets, timeout=900):
    _progress(f"state.highstate on {', '.join(targets)}")
    client = salt.client.get_local_client(mopts=__opts__)
    try:
        returns = client.cmd(list(targets), "state.highstate", tgt_type="list", timeout=timeout, full_return=True)
    finally:
        client.destroy()
    return _highstate_summary(returns, targets)


def _fail(ret):
    """A return with problems makes salt-run exit non-zero."""
    if ret.get("problems"):
        __context__["retcode"] = 1
    return ret


def _run_fence_command(command):
    """Run the fencing command; (exit status 0, its output)."""
    timeout = dbplan.fence_timeout(__opts__)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, str(err)
    output = " ".join((proc.stdout + proc.stderr).split())[-500:]
    return proc.returncode == 0, f"exit status {proc.returncode}" + (f": {output}" if output else "")


def _fence(topology, old, error, force):
    """
    Make sure the dead primary ``old`` takes no more writes before a replica is promoted (``error``: why its status
    failed). Its minion answers (its MariaDB does not): ``mariadb_replication.fence_writes`` there. Otherwise, or if
    that failed: the master configuration's fencing command. What was done; raises CommandExecutionError when
    nothing confirmed it and ``force`` is not set.
    """
    tried = []
    if error != NO_ANSWER:
        try:
            done = _call(topology, old, "mariadb_replication.fence_writes", wait=QUICK_TIMEOUT + 10)
            if done.get("fenced") == "read_only":
                return (
                    f"{old} fenced by salt: read_only ON, {len(done.get('killed') or [])} client connection(s) killed"
                )
            return f"{old} fenced by salt: its MariaDB does not answer, the mariadb service is stopped"
        except CommandExecutionError as err:
            tried.append(f"salt: {err}")
    else:
        tried.append(f"salt: {NO_ANSWER}")
    command = dbplan.fence_command(__opts__, topology, old)
    if command is None:
        tried.append(f"no {dbplan.FENCE_COMMAND} in the master configuration")
    else:
        _progress(f"{old}: fencing: {' '.join(command)}")
        ok, output = _run_fence_command(command)
        if ok:
            return f"{old} fenced by {dbplan.FENCE_COMMAND} ({' '.join(command)}: {output})"
        tried.append(f"{' '.join(command)}: {output}")
    if force:
        return f"{old} NOT fenced ({'; '.join(tried)}): promoted anyway (force=True)"
    raise CommandExecutionError(
        f"failover refused: {old} could not be fenced ({'; '.join(tried)}). A primary cut off from salt may still run "
        f"and acknowledge the writes its clients send it: promoting a replica would give two primaries whose data "
        f"forks. Make sure {old} takes no writes (powered off at the hypervisor, or its network cut, or its MariaDB "
        f"stopped), then: salt-run db.failover force=True; or configure {dbplan.FENCE_COMMAND} (docs/roles/db.md, "
        f"'Fail over')"
    )


# ---- the runner functions -------------------------------------------------------------------------


def status():
    """
    The replication state of every db host: its role (``primary``, ``replica``, ``standalone``), read_only,
    source, whether both replica threads run, lag (``Seconds_Behind_Master``), GTID positions (current, slave,
    binlog, received), semi-sync; which host is the running primary, which one the inventory names masterdb, and
    the problems found (replicas lagging beyond ``rolestack:db:settings:max_lag_seconds`` included).

    CLI Example:

    .. code-block:: bash

        salt-run db.status
    """
    topology = _topology()
    summary = dbplan.summarize(topology, _collect(topology), dbplan.lag_limit(topology, None, "max_lag_seconds"))
    return summary


def health(max_lag=None):
    """
    Replication health: per db host ``ok`` and its problems (unreachable, MariaDB down, replication broken with
    the IO/SQL error, a replica following another host than the primary, lag beyond ``max_lag`` seconds), and
    the platform's (no primary, several, the inventory naming another host masterdb). salt-run exits non-zero
    when anything is wrong, for a monitoring check.

    CLI Example:

    .. code-block:: bash

        salt-run db.health
        salt-run db.health max_lag=5

    max_lag
        Seconds a replica may be behind; defaults to the inventory's ``db.max_lag_seconds`` (30).
    """
    topology = _topology()
    limit = dbplan.lag_limit(topology, max_lag, "max_lag_seconds")
    summary = dbplan.summarize(topology, _collect(topology), limit)
    hosts = {}
    for name, state in summary["hosts"].items():
        mine = [problem for problem in summary["problems"] if problem.startswith(f"{name}: ")]
        hosts[name] = {
            "ok": not mine,
            "role": state.get("role"),
            "replicating": state.get("replicating"),
            "lag": state.get("lag"),
            "problems": [problem.split(": ", 1)[1] for problem in mine],
        }
    return _fail(
        {
            "ok": summary["ok"],
            "primary": summary["primary"],
            "masterdb": summary["masterdb"],
            "max_lag": limit,
            "hosts": hosts,
            "problems": summary["problems"],
        }
    )


class _Steps(list):
    """A runner's steps with the seconds each took since the previous one, shown as they happen."""

    def __init__(self, start=None):
        super().__init__()
        self.mark = time.monotonic() if start is None else start

    def __call__(self, what):
        now = time.monotonic()
        self.append({"step": what, "seconds": round(now - self.mark, 3)})
        self.mark = now
        _progress(what)


def switchover(new, max_lag=None, timeout=30, update_inventory=True, highstate=True):
    """
    Make the replica ``new`` the primary, the running primary its replica, and re-point every other db host at
    it, without losing a transaction: writes are blocked on the old primary (read_only ON, client connections
    killed; replication threads are kept) until ``new`` has applied everything the old one wrote, then ``new``
    stops replicating and takes writes. Then (``update_inventory``) the inventory's masterdb role moves to
    ``new`` in a commit on the ext_pillar's git branch ("db: switch masterdb from X to Y"), and (``highstate``)
    every minion is highstated so /etc/hosts, DNS and certificates follow.

    Refused, before anything changes, when ``new`` is not a db host, is the primary already, does not answer,
    does not replicate from the primary (both threads running), lags more than ``max_lag`` seconds, or holds
    transactions the primary does not have; or when no single primary runs.

    If ``new`` cannot catch up within ``timeout`` seconds, the old primary takes writes again and nothing else
    changed.

    Returns ``old``, ``new``, ``write_block_seconds`` (from read_only ON on the old primary to read_only OFF on
    the new one), the GTID position handed over, ``steps`` with their seconds, each replica's state, the
    inventory commit, the highstate summary and ``problems``.

    CLI Example:

    .. code-block:: bash

        salt-run db.switchover db2
        salt-run db.switchover db2 max_lag=10 timeout=60
        salt-run db.switchover db2 update_inventory=False highstate=False

    new
        The db host to promote (inventory name, FQDN or minion id).

    max_lag
        Seconds ``new`` may be behind; defaults to the inventory's ``db.switchover_max_lag_seconds`` (5).

    timeout
        Seconds ``new`` may take to apply the old primary's last transactions (the longest write block), and
        each re-pointed replica to start replicating.

    update_inventory
        Commit the move of masterdb to ``new`` (git source only). With False the inventory must be changed
        before the next highstate (the db role would point ``new`` back at the old masterdb).

    highstate
        Highstate every minion afterwards, only when the inventory names ``new`` masterdb.
    """
    started = time.monotonic()
    dbplan.check_timeout(timeout)
    topology = _topology()
    name = dbplan.host_name(new, topology) or str(new)
    limit = dbplan.lag_limit(topology, max_lag, "switchover_max_lag_seconds")
    summary = dbplan.summarize(topology, _collect(topology), dbplan.lag_limit(topology, None, "max_lag_seconds"))
    binlog_state = None
    if summary["primary"] and name != summary["primary"]:
        binlog_state = _applied_state(topology, summary["primary"])
    reason = dbplan.switchover_refusal(name, topology, summary, limit, binlog_state)
    if reason:
        raise CommandExecutionError(f"switchover to {name} refused: {reason}")
    new, old = name, summary["primary"]
    step = steps = _Steps()

    # the write block starts: nothing but replication writes to the old primary from here
    _progress(f"{old}: read_only ON, client connections killed")
    block_started = time.monotonic()
    steps.mark = block_started
    try:
        # in one job; kill_client_connections and status run even if set_read_only failed: nothing is lost then
        _, killed, old_status = _call_many(
            topology,
            old,
            [
                ("mariadb_replication.set_read_only", [], {"enabled": True}),
                ("mariadb_replication.kill_client_connections", [], {}),
                ("mariadb_replication.status", [], {}),
            ],
        )
    except CommandExecutionError as err:
        undo = _undo_switchover(topology, old, new, timeout)
        raise CommandExecutionError(f"switchover to {new} aborted: {err}; {undo}") from err
    position = old_status["gtid_binlog_pos"]
    step(f"{old}: read_only ON, {len(killed)} client connection(s) killed, at {position}")
    try:
        # one job: wait for the position, RESET SLAVE ALL, read_only OFF (each salt job costs ~0.2 s of block)
        _call(topology, new, "mariadb_replication.promote", position, timeout=timeout, wait=timeout + 15)
    except CommandExecutionError as err:
        undo = _undo_switchover(topology, old, new, timeout)
        raise CommandExecutionError(f"switchover to {new} aborted: {err}; {undo}") from err
    write_block = time.monotonic() - block_started
    step(f"{new}: applied {position}, replication forgotten (RESET SLAVE ALL), read_only OFF, takes writes "
         f"(write block {write_block:.3f} s)")  # fmt: skip

    others = [host for host in topology["hosts"] if host not in (new, old)] + [old]
    reachable = {host for host, state in summary["hosts"].items() if state["reachable"]}
    replicas, problems = _repoint(topology, others, new, old, timeout, reachable)
    step(f"re-pointed at {new}: {', '.join(others)}")
    ret = {
        "old": old,
        "new": new,
        "write_block_seconds": round(write_block, 3),
        "gtid_binlog_pos": position,
        "killed_connections": len(killed),
        "replicas": replicas,
        "steps": steps,  # later steps (inventory, highstate) are appended to it
    }
    ret.update(_after_move(topology, old, new, "switch", update_inventory, highstate, None, problems, step))
    ret["seconds"] = round(time.monotonic() - started, 3)
    ret["problems"] = problems
    return _fail(ret)


def _undo_switchover(topology, old, new, timeout):
    """
    After a failed promotion: ``new`` read-only replica of ``old`` again, then ``old`` writable, but only once
    ``new`` is confirmed read-only (never two writable primaries: when that cannot be confirmed, nothing takes
    writes until an operator checked). What was done.
    """
    done = []
    try:
        _call(topology, new, "mariadb_replication.set_read_only", enabled=True)
        confirmed = bool(_call(topology, new, "mariadb_replication.status")["read_only"])
    except CommandExecutionError as err:
        confirmed, why = False, str(err)
    else:
        why = "its read_only is still OFF"
    if not confirmed:
        done.append(
            f"{new} could not be confirmed read-only ({why}), so {old} stays read-only too: no db host takes writes. "
            f"Check {new} (salt-run db.status); once it is read-only (salt {topology['hosts'][new]['minion']} "
            f"mariadb_replication.set_read_only), make {old} writable again: salt {topology['hosts'][old]['minion']} "
            f"mariadb_replication.set_read_only enabled=False"
        )
        return "; ".join(done)
    try:
        settings = _call(topology, new, "mariadb_replication.replica_settings")
        if not settings:
            _call(topology, new, "mariadb_replication.configure_replica", **_replica_args(topology, old))
        _call(topology, new, "mariadb_replication.start_replica", timeout=timeout, wait=timeout + 15)
        done.append(f"{new} replicates from {old} again")
    except CommandExecutionError as err:
        done.append(f"{new} is read-only but could not be put back as a replica ({err}): check it (salt-run db.status)")
    try:
        _call(topology, old, "mariadb_replication.set_read_only", enabled=False)
        done.append(f"{old} takes writes again (read_only OFF)")
    except CommandExecutionError as err:
        done.append(f"{old} is still read-only ({err}): salt {old} mariadb_replication.set_read_only enabled=False")
    return "; ".join(done)


def _after_move(topology, old, new, verb, update_inventory, highstate, exclude, problems, step):
    """The inventory commit and the highstate after the primary moved."""
    ret = {}
    names_new = topology["masterdb"] == new
    if update_inventory:
        try:
            ret["inventory"], names_new = _update_inventory(topology, old, new, verb)
        except CommandExecutionError as err:
            ret["inventory"] = {"error": str(err)}
            problems.append(f"inventory: {err}")
        step(f"inventory: {ret['inventory'].get('message') or ret['inventory'].get('unchanged') or 'not changed'}")
    else:
        ret["inventory"] = {"unchanged": "update_inventory=False"}
    if not names_new:
        problems.append(
            f"the inventory names {topology['masterdb']} masterdb, the primary is {new}: commit the move of masterdb "
            f"to {new} before the next highstate (the db role would point {new} back at {topology['masterdb']})"
        )
    if highstate and names_new:
        targets = [minion for minion in _accepted() if minion not in (exclude or ())]
        # the CA first: its highstate loads the moved masterdb names into its signing policies, so the new
        # masterdb's certificate (requested in the same highstate wave) names masterdb at once
        waves = [[topology["ca"]], [minion for minion in targets if minion != topology["ca"]]]
        ret["highstate"] = {}
        for wave in [wave for wave in waves if wave and set(wave) <= set(targets)] or [targets]:
            ret["highstate"].update(_highstate(wave))
        failed = sorted(minion for minion, result in ret["highstate"].items() if not result["ok"])
        if failed:
            problems.append(f"highstate failed on {', '.join(failed)}")
        step(f"highstate of {len(targets)} minion(s)")
    elif highstate:
        ret["highstate"] = {"skipped": "the inventory does not name the new primary masterdb"}
    return ret


def failover(timeout=60, dry_run=False, update_inventory=True, highstate=True, force=False):
    """
    Replace a dead primary (its minion does not answer, or its MariaDB is down) by the most advanced replica.

    Every replica of the dead primary first applies what it received (its relay log: waits until
    ``gtid_slave_pos`` reaches the received ``Gtid_IO_Pos``, up to ``timeout`` seconds); the one whose
    ``gtid_current_pos`` holds every other's is promoted (replication reset, read_only OFF), the others are
    re-pointed at it, the inventory moves masterdb to it ("db: fail over masterdb from X to Y"; the dead host
    keeps the db role only) and every other minion is highstated. The old primary is left alone: its MariaDB
    starts read_only ON; bring it back with ``salt-run db.rejoin <host>`` or rebuild it.

    The old primary is fenced before anything is promoted: when its minion answers (its MariaDB does not),
    ``mariadb_replication.fence_writes`` there (read_only ON and client connections killed, or its MariaDB service
    stopped); otherwise the master configuration's ``rolestack_db_fence_command`` (a list argv, ``{host}``
    substituted, exit status 0 when the host is off; as MHA's ``shutdown_script``) must confirm it is off.
    Without either, the failover is refused unless ``force=True``: a partitioned primary keeps acknowledging
    writes on its own.

    Refused when a primary is running, when the old primary answers, when a replica is still connected to it,
    when the old primary cannot be fenced (without ``force``), when the replicas' positions diverged, or when a
    replica received transactions the chosen one has not applied (a replica behind another reachable one is
    never promoted).

    Returns ``promoted``, ``old``, ``candidates``, ``positions`` (GTID of each candidate), ``seconds`` (from the
    start to read_only OFF on the promoted host), ``steps``, the replicas, inventory commit and highstate.

    CLI Example:

    .. code-block:: bash

        salt-run db.failover dry_run=True
        salt-run db.failover

    timeout
        Seconds each replica may take to apply its relay log, and to start replicating from the new primary.

    dry_run
        Only say which replica would be promoted (after the replicas applied their relay logs); nothing is fenced.

    force
        Promote even when the old primary could not be fenced: only after making sure it takes no writes (it is
        powered off, or cut from every client), see docs/roles/db.md "Fail over".
    """
    started = time.monotonic()
    dbplan.check_timeout(timeout)
    topology = _topology()
    step = steps = _Steps(started)

    results = _collect(topology, grace=FAILOVER_GRACE)
    sources = {dbplan.host_state(r["status"], topology)["source"] for r in results.values() if "status" in r}
    late = [
        host
        for host, result in results.items()
        if result.get("error") == NO_ANSWER and host not in sources and host != topology["masterdb"]
    ]
    if late:
        # replicas that may be candidates get salt's whole timeout
        results.update(_collect(topology, late))
    summary = dbplan.summarize(topology, results, None)
    plan = dbplan.failover_plan(topology, summary)
    old, candidates = plan["old"], plan["candidates"]
    step(f"{old} is dead; candidates: {', '.join(candidates)}")
    fenced = None
    if not dry_run:
        fenced = _fence(topology, old, (results.get(old) or {}).get("error"), force)
        step(fenced)
    for host in candidates:
        state = summary["hosts"][host]
        if state["sql_running"] == "Yes" and state["gtid_io_pos"]:
            try:
                _call(topology, host, "mariadb_replication.wait_for_gtid", state["gtid_io_pos"], timeout=timeout,
                      wait=timeout + 15)  # fmt: skip
            except CommandExecutionError as err:
                log.warning("db.failover: %s", err)
    fresh = _collect(topology, candidates)
    positions = {}
    for host in candidates:
        if "status" not in fresh[host]:
            raise CommandExecutionError(f"{host} stopped answering during the failover: {fresh[host]['error']}")
        state = dbplan.host_state(fresh[host]["status"], topology)
        positions[host] = {
            "applied": state["gtid_current_pos"] or state["gtid_slave_pos"],
            "received": state["gtid_io_pos"],
            "sql_running": state["sql_running"] == "Yes",
        }
    step("relay logs applied: " + ", ".join(f"{h} at {p['applied']}" for h, p in positions.items()))
    chosen = dbplan.choose_promotion(positions)
    ret = {
        "old": old,
        "candidates": candidates,
        "excluded": plan["excluded"],
        "positions": {host: info["applied"] for host, info in positions.items()},
        "fence": fenced,
    }
    if dry_run:
        ret.update(promoted=None, would_promote=chosen, seconds=round(time.monotonic() - started, 3), steps=list(steps))
        return ret
    _call(topology, chosen, "mariadb_replication.promote")
    seconds = time.monotonic() - started
    step(f"{chosen}: replication reset, read_only OFF, takes writes")
    others = [host for host in topology["hosts"] if host not in (old, chosen)]
    reachable = {host for host in others if summary["hosts"][host]["reachable"]}
    replicas, problems = _repoint(topology, others, chosen, None, timeout, reachable)
    if others:
        step(f"re-pointed at {chosen}: {', '.join(others)}")
    ret.update(promoted=chosen, seconds=round(seconds, 3), replicas=replicas, steps=list(steps))
    exclude = [topology["hosts"][old]["minion"]]
    ret.update(_after_move(topology, old, chosen, "fail over", update_inventory, highstate, exclude, problems, step))
    ret["old_primary"] = (
        f"{old} must not take writes again: its MariaDB starts read_only ON. When it is back, "
        f"salt-run db.rejoin {old} makes it a replica of {chosen} if it holds no transaction {chosen} lacks; "
        f"otherwise " + REBUILD_HINT.format(host=old)
    )
    ret["problems"] = problems
    ret["total_seconds"] = round(time.monotonic() - started, 3)
    return _fail(ret)


def rejoin(host, timeout=30):
    """
    Bring a db host back as a read-only replica of the running primary: an old primary after a failover (or a
    switchover made without this runner), or a replica that lost its source. Its own binary log says where it
    stands (``gtid_slave_pos`` is set to its ``gtid_binlog_pos``). Refused when it holds transactions the
    primary does not have (written on it and never replicated, e.g. its last ones before it died): it cannot
    rejoin without losing or duplicating them, and must be rebuilt (the message says how).

    CLI Example:

    .. code-block:: bash

        salt-run db.rejoin db1-masterdb

    host
        The db host (inventory name, FQDN or minion id).

    timeout
        Seconds to wait for both replica threads to run.
    """
    dbplan.check_timeout(timeout)
    topology = _topology()
    name = dbplan.host_name(host, topology)
    if name is None:
        raise CommandExecutionError(f"{host} is not a db host (db hosts: {', '.join(topology['hosts'])})")
    summary = dbplan.summarize(topology, _collect(topology), None)
    primary = summary["primary"]
    if primary is None:
        raise CommandExecutionError(f"no running primary to rejoin: {'; '.join(summary['problems'])}")
    if name == primary:
        raise CommandExecutionError(f"{name} is the running primary")
    state = summary["hosts"][name]
    if not state["reachable"]:
        raise CommandExecutionError(f"{name} does not answer: {state['error']}")
    if state["replicating"] and state["source"] == primary:
        return {"host": name, "primary": primary, "changed": False, "comment": f"replicating from {primary} already"}
    mine = state["gtid_binlog_pos"]
    theirs = _applied_state(topology, primary)
    missing = gtid.missing(mine, theirs)
    if missing:
        raise CommandExecutionError(
            f"{name} cannot rejoin: it holds transactions the primary {primary} never had ({', '.join(missing)}; "
            f"what {primary} applied: {theirs or 'nothing'}): they were written on {name} and never replicated, "
            f"so its data forked; " + REBUILD_HINT.format(host=name)
        )
    _point_at(topology, name, primary, timeout, from_binlog=True)
    return {
        "host": name,
        "primary": primary,
        "changed": True,
        "gtid_slave_pos": mine,
        "comment": f"replicating from {primary}, from {mine or 'the beginning'}",
    }
