"""
The db runner's decisions, without a master: the db hosts from the ``rolestack`` pillar, the platform's
replication state from each host's ``mariadb_replication.status``, why a switchover must not start, which dead
primary a failover replaces and which replica it promotes, the master configuration's fencing command and the
runner's own arguments, and the edit of the inventory's YAML text that moves the masterdb role between two hosts.

The ``db`` runner (``_runners/db.py``) asks the db hosts (LocalClient), runs git and the highstate; everything
here takes plain data and returns plain data or raises CommandExecutionError/SaltInvocationError. GTID order is
``rolestack_gtid``'s, the inventory's YAML and validation ``rolestack_inventory``'s. Unit tests in
tests/unit/test_rolestack_db_plan.py.
"""

import copy

import rolestack_gtid as gtid
import rolestack_inventory as logic
import yaml
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

# the master configuration's fencing hook (a list argv, placeholders {host} {minion} {fqdn} {address}; exit 0: the
# host is off), as MHA's shutdown_script, and how long it may take (seconds)
FENCE_COMMAND = "rolestack_db_fence_command"
FENCE_TIMEOUT = "rolestack_db_fence_timeout"


# ---- topology and state ---------------------------------------------------------------------------


def topology_from_pillar(rolestack, accepted=None):  # pylint: disable=unused-argument
    """
    The db hosts in the order of the inventory, from the ``rolestack`` pillar of a db host:
    ``{"zone", "masterdb", "hosts": {name: {name, fqdn, address, server_id, minion}}, "settings", "password"}``.
    A host's minion id is its inventory name (the one canonical id, docs/inventory.md "Minion ids"); ``ca`` is the
    salt host's (the CA's) minion id.
    """
    db = rolestack.get("db") or {}
    if not db.get("peers"):
        raise CommandExecutionError("the inventory has no db hosts (rolestack:db:peers is empty)")
    hosts = {}
    for peer in db["peers"]:
        minion = peer["name"]
        hosts[peer["name"]] = {
            "name": peer["name"],
            "fqdn": peer["fqdn"],
            "address": peer.get("address"),
            "server_id": peer.get("server_id"),
            "minion": minion,
        }
    password = (rolestack.get("secrets") or {}).get("replication_password")
    if not password:
        raise CommandExecutionError("the db pillar has no replication_password secret (inventory secrets)")
    return {
        "zone": (rolestack.get("platform") or {}).get("zone"),
        "masterdb": (db.get("masterdb") or {}).get("name"),
        "ca": ((rolestack.get("hosts_entries") or {}).get("salt") or {}).get("name"),
        "hosts": hosts,
        "settings": dict(db.get("settings") or {}),
        "password": password,
    }


def host_name(value, topology):
    """The inventory name of a db host given by name, FQDN, minion id or address; None when it is none of them."""
    if value is None:
        return None
    text = str(value).strip().rstrip(".")
    for name, host in topology["hosts"].items():
        if text in (name, host["fqdn"], host["minion"], host["address"]):
            return name
    zone = topology.get("zone")
    if zone and text in ("masterdb", f"masterdb.{zone}") and topology.get("masterdb") in topology["hosts"]:
        return topology["masterdb"]
    return None


def host_state(status, topology):
    """What the runner looks at in one host's ``mariadb_replication.status``."""
    io_running = status.get("Slave_IO_Running")
    sql_running = status.get("Slave_SQL_Running")
    master_host = status.get("Master_Host") or None
    return {
        "reachable": True,
        "role": status.get("role"),
        "read_only": status.get("read_only"),
        "source": (host_name(master_host, topology) or master_host) if master_host else None,
        "replicating": io_running == "Yes" and sql_running == "Yes",
        "io_running": io_running,
        "sql_running": sql_running,
        "lag": status.get("Seconds_Behind_Master"),
        "last_io_error": status.get("Last_IO_Error") or None,
        "last_sql_error": status.get("Last_SQL_Error") or None,
        "gtid_current_pos": status.get("gtid_current_pos") or "",
        "gtid_slave_pos": status.get("gtid_slave_pos") or "",
        "gtid_binlog_pos": status.get("gtid_binlog_pos") or "",
        "gtid_io_pos": status.get("Gtid_IO_Pos") or "",
        "semi_sync_primary": status.get("Rpl_semi_sync_master_status"),
        "semi_sync_replicas": status.get("Rpl_semi_sync_master_clients"),
        "replicas_connected": status.get("binlog_dump_threads"),
        "server_id": status.get("server_id"),
    }


def _thread_errors(state):
    errors = [error for error in (state.get("last_io_error"), state.get("last_sql_error")) if error]
    return f": {'; '.join(errors)}" if errors else ""


def summarize(topology, results, max_lag):
    """
    The platform's replication state from each host's status (``results``: ``{host: {"status": dict}}`` or
    ``{host: {"error": text}}``): ``{"masterdb", "primary", "hosts", "problems", "ok"}``. The primary is the one
    reachable host taking writes (read_only OFF, no source); ``masterdb`` is the host the inventory names.
    """
    masterdb = topology["masterdb"]
    hosts = {}
    for name in topology["hosts"]:
        result = results.get(name) or {"error": "did not answer"}
        if "status" in result:
            hosts[name] = host_state(result["status"], topology)
        else:
            hosts[name] = {"reachable": False, "error": result.get("error") or "did not answer"}
        hosts[name]["masterdb"] = name == masterdb
    primaries = [name for name, state in hosts.items() if state.get("role") == "primary"]
    primary = primaries[0] if len(primaries) == 1 else None
    problems = []
    if not primaries:
        problems.append(
            "no primary: no reachable db host takes writes (read_only OFF without a source); "
            "if the primary died: salt-run db.failover"
        )
    elif len(primaries) > 1:
        problems.append(f"several primaries take writes: {', '.join(primaries)}: set read_only ON on all but one")
    if primary and masterdb and primary != masterdb:
        problems.append(
            f"the inventory names {masterdb} masterdb but the running primary is {primary}: commit the move of "
            f"masterdb to {primary} before the next highstate, or switch back: salt-run db.switchover {masterdb}"
        )
    for name, state in hosts.items():
        if not state["reachable"]:
            problems.append(f"{name}: unreachable: {state['error']}")
            continue
        if name in primaries:
            continue
        if state["role"] != "replica":
            problems.append(f"{name}: replicates from nobody (read_only {'ON' if state['read_only'] else 'OFF'})")
            continue
        if not state["read_only"]:
            problems.append(f"{name}: a replica with read_only OFF (applications could write to it)")
        if not state["replicating"]:
            problems.append(
                f"{name}: replication from {state['source']} is broken (IO thread {state['io_running']}, "
                f"SQL thread {state['sql_running']}){_thread_errors(state)}"
            )
        elif primary and state["source"] != primary:
            problems.append(f"{name}: replicates from {state['source']}, not from the primary {primary}")
        elif state["lag"] is not None and max_lag is not None and int(state["lag"]) > int(max_lag):
            problems.append(f"{name}: {state['lag']} s behind {state['source']} (more than {max_lag} s)")
    return {
        "masterdb": masterdb,
        "primary": primary,
        "primaries": primaries,
        "hosts": hosts,
        "problems": problems,
        "ok": not problems,
    }


def switchover_refusal(new, topology, summary, max_lag, primary_binlog_state):
    """
    Why a switchover to ``new`` must not start (None: it may). ``primary_binlog_state`` is what the primary applied
    (its ``gtid_binlog_state`` with its ``gtid_slave_pos``, ``_applied_state``) read after ``summary``: under writes,
    a replica's position read a moment after the primary's may be ahead of it without holding anything the primary
    lacks.
    """
    if new not in topology["hosts"]:
        return f"{new} is not a db host (db hosts: {', '.join(topology['hosts'])})"
    primary = summary["primary"]
    hosts = summary["hosts"]
    if primary is None:
        why = next((p for p in summary["problems"] if "primar" in p), "no single primary")
        return f"there is no running primary to switch from ({why})"
    if new == primary:
        return f"{new} is the primary already"
    target = hosts[new]
    if not target["reachable"]:
        return f"{new} does not answer: {target['error']}"
    if target["role"] != "replica":
        return f"{new} is not a replica of {primary}: it replicates from nobody"
    if target["source"] != primary:
        return f"{new} replicates from {target['source']}, not from the primary {primary}"
    if not target["replicating"]:
        return (
            f"{new} is not replicating from {primary} (IO thread {target['io_running']}, SQL thread "
            f"{target['sql_running']}){_thread_errors(target)}: it may be missing transactions; repair its "
            f"replication first (salt {topology['hosts'][new]['minion']} mariadb_replication.start_replica timeout=30)"
        )
    lag = target["lag"]
    if lag is None or int(lag) > int(max_lag):
        return (
            f"{new} is {lag} s behind {primary}, more than max_lag={max_lag} s: the write block would last until "
            f"it caught up; wait, or pass a larger max_lag"
        )
    missing = gtid.missing(target["gtid_current_pos"], primary_binlog_state)
    if missing:
        return (
            f"{new} has transactions the primary {primary} does not have ({', '.join(missing)}; {new} at "
            f"{target['gtid_current_pos']}, {primary}'s binlog state {primary_binlog_state or 'empty'}): they were "
            f"written on the replica; promoting it would fork the data"
        )
    return None


def failover_plan(topology, summary):
    """
    The dead primary and the replicas that may replace it: ``{"old", "candidates", "excluded"}``; raises
    CommandExecutionError when a failover must not run (a primary is running, the old one still answers, a
    replica is still connected to it, ...).
    """
    hosts = summary["hosts"]
    if summary["primaries"]:
        raise CommandExecutionError(
            f"{' and '.join(summary['primaries'])} take{'s' if len(summary['primaries']) == 1 else ''} writes "
            f"(read_only OFF, no source): there is nothing to fail over; to move the primary: "
            f"salt-run db.switchover <host>"
        )
    sources = sorted({state["source"] for state in hosts.values() if state.get("role") == "replica"})
    if len(sources) > 1:
        raise CommandExecutionError(
            f"the replicas replicate from different sources ({', '.join(map(str, sources))}): refusing to guess "
            f"which primary died; see salt-run db.status"
        )
    old = sources[0] if sources else topology["masterdb"]
    if old not in topology["hosts"]:
        raise CommandExecutionError(f"the replicas replicate from {old}, which is not a db host of the inventory")
    if hosts[old]["reachable"]:
        raise CommandExecutionError(
            f"{old} answers and its MariaDB runs (read_only {'ON' if hosts[old]['read_only'] else 'OFF'}): it is not "
            f"dead. A failover is for a primary that does not answer or whose MariaDB is down. To make it take "
            f"writes again: salt {topology['hosts'][old]['minion']} mariadb_replication.set_read_only enabled=False; "
            f"to move the primary: salt-run db.switchover <host>"
        )
    candidates, excluded = [], {}
    for name, state in hosts.items():
        if name == old:
            continue
        if not state["reachable"]:
            excluded[name] = f"unreachable: {state['error']}"
        elif state["role"] != "replica" or state["source"] != old:
            excluded[name] = f"not a replica of {old} (source: {state.get('source') or 'none'})"
        else:
            candidates.append(name)
    connected = [name for name in candidates if hosts[name]["io_running"] == "Yes"]
    if connected:
        raise CommandExecutionError(
            f"{', '.join(connected)} still receive{'s' if len(connected) == 1 else ''} {old}'s binary log (IO thread "
            f"running): {old}'s MariaDB still serves replication although its minion does not answer; refusing "
            f"(two primaries). Stop it first, or wait until the replicas lose it"
        )
    if not candidates:
        raise CommandExecutionError(
            f"no replica of {old} answers: nothing to promote ({'; '.join(f'{h}: {r}' for h, r in excluded.items())})"
        )
    return {"old": old, "candidates": candidates, "excluded": excluded}


def choose_promotion(positions):
    """
    The replica to promote: the most advanced by GTID among ``positions`` (``{host: {"applied": gtid,
    "received": gtid, "sql_running": bool}}``; ties go to the first in inventory order). Refuses when positions
    diverged, or when a replica received (relay log) transactions the chosen one has not applied.
    """
    if not positions:
        raise CommandExecutionError("no candidate to promote")
    applied = {host: info["applied"] for host, info in positions.items()}
    ahead_of_all = [host for host in applied if all(gtid.at_least(applied[host], other) for other in applied.values())]
    if not ahead_of_all:
        listed = ", ".join(f"{host} at {pos or '(empty)'}" for host, pos in applied.items())
        raise CommandExecutionError(
            f"the replicas' positions diverged ({listed}): none holds every transaction the others hold; "
            f"refusing to promote (compare their binary logs, promote by hand, rebuild the others)"
        )
    chosen = ahead_of_all[0]
    for host, info in positions.items():
        received = info.get("received") or ""
        if not gtid.at_least(applied[chosen], received):
            raise CommandExecutionError(
                f"{host} received transactions up to {received} that {chosen} (the most advanced, at "
                f"{applied[chosen]}) has not applied; {host} has not applied them either (SQL thread "
                f"{'running' if info.get('sql_running') else 'stopped'}): promoting would lose them. Let {host}'s "
                f"SQL thread apply its relay log (salt {host} mariadb_replication.start_replica), then run the "
                f"failover again"
            )
    return chosen


# ---- the runner's arguments and the master configuration ------------------------------------------


def lag_limit(topology, given, key):
    """Seconds a replica may lag: ``given`` (a number >= 0), else the inventory's db setting ``key`` (or its default)."""
    if given is None:
        return int(topology["settings"].get(key, logic.DB_SETTINGS[key][0]))
    if isinstance(given, bool) or not isinstance(given, int | float) or given < 0:
        raise SaltInvocationError(f"max_lag: expected a number of seconds >= 0, got {given!r}")
    return given


def check_timeout(timeout):
    """Refuses a ``timeout`` that is not a number of seconds > 0 (SaltInvocationError)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise SaltInvocationError(f"timeout: expected a number of seconds > 0, got {timeout!r}")


def fence_command(opts, topology, host):
    """
    The master configuration's fencing command for ``host`` (``rolestack_db_fence_command``: an argv list whose
    ``{host}``, ``{minion}``, ``{fqdn}`` and ``{address}`` are substituted), or None when none is configured.
    """
    command = opts.get(FENCE_COMMAND)
    if command is None:
        return None
    if not isinstance(command, list) or not command or not all(isinstance(part, str) and part for part in command):
        raise CommandExecutionError(
            f"{FENCE_COMMAND} in the master configuration: expected a list of non-empty strings (a command and its "
            f"arguments, with {{host}}), got {type(command).__name__}"
        )
    spec = topology["hosts"][host]
    values = {"host": host, "minion": spec["minion"], "fqdn": spec["fqdn"], "address": spec.get("address") or ""}
    try:
        return [part.format_map(values) for part in command]
    except (KeyError, IndexError, ValueError) as err:
        raise CommandExecutionError(
            f"{FENCE_COMMAND} in the master configuration: bad placeholder ({type(err).__name__} {err}); expected "
            f"{{host}}, {{minion}}, {{fqdn}} or {{address}}"
        ) from err


def fence_timeout(opts):
    """Seconds the fencing command may take: the master configuration's ``rolestack_db_fence_timeout`` (60)."""
    timeout = opts.get(FENCE_TIMEOUT, 60)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise CommandExecutionError(
            f"{FENCE_TIMEOUT} in the master configuration: expected a number of seconds > 0, got "
            f"{type(timeout).__name__}"
        )
    return timeout


# ---- the inventory edit ---------------------------------------------------------------------------


def git_source(opts):
    """The rolestack ext_pillar's git source ``{repo, ref, path}`` in the master configuration, or None."""
    for entry in opts.get("ext_pillar") or []:
        if isinstance(entry, dict) and isinstance(entry.get("rolestack"), dict):
            git = entry["rolestack"].get("git")
            if isinstance(git, dict) and git.get("repo") and git.get("path"):
                return {"repo": git["repo"], "ref": git.get("ref", "main"), "path": git["path"]}
    return None


def _effective_roles(name, spec):
    roles = (spec or {}).get("roles")
    if roles is None:
        roles = logic.roles_from_name(name)[0]
    return list(roles)


def _inventory_node(root):
    """The mapping node holding the inventory (the document, or its ``rolestack:inventory``), as load_yaml reads it."""
    node = root
    if isinstance(root, yaml.MappingNode):
        rolestack = _child(root, "rolestack")
        if isinstance(rolestack, yaml.MappingNode) and _child(rolestack, "inventory") is not None:
            node = _child(rolestack, "inventory")
    return node


def _child(mapping, key):
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return value_node
    return None


def _host_nodes(mapping, host):
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == host:
            return key_node, value_node
    raise CommandExecutionError(f"host {host} is not in the inventory's hosts")


def _flow(roles):
    return "[" + ", ".join(roles) + "]"


def _roles_edit(text, host, roles, hosts_node):
    """One (start, end, replacement) splice of ``text`` that gives ``host`` these explicit roles."""
    key_node, value = _host_nodes(hosts_node, host)
    if isinstance(value, yaml.MappingNode):
        roles_node = _child(value, "roles")
        if isinstance(roles_node, yaml.SequenceNode) and not roles_node.flow_style and roles_node.value:
            # a block list: rewrite its items, same indentation
            first, last = roles_node.value[0], roles_node.value[-1]
            start = text.rfind("\n", 0, first.start_mark.index) + 1
            end = text.find("\n", last.end_mark.index)
            end = len(text) if end < 0 else end
            indent = " " * roles_node.start_mark.column
            return start, end, "\n".join(f"{indent}- {role}" for role in roles)
        if roles_node is not None:
            # a flow list (or something else that the validation will judge)
            return roles_node.start_mark.index, roles_node.end_mark.index, _flow(roles)
        if value.flow_style:
            inner = text[value.start_mark.index + 1 : value.end_mark.index - 1].strip()
            joined = f"{inner}, roles: {_flow(roles)}" if inner else f"roles: {_flow(roles)}"
            return value.start_mark.index, value.end_mark.index, "{" + joined + "}"
        # a block mapping: a roles line before its first key
        first_key = value.value[0][0]
        start = text.rfind("\n", 0, first_key.start_mark.index) + 1
        return start, start, f"{' ' * first_key.start_mark.column}roles: {_flow(roles)}\n"
    if isinstance(value, yaml.ScalarNode) and value.tag.endswith(":null"):
        if value.start_mark.index == value.end_mark.index:
            colon = text.find(":", key_node.end_mark.index)
            return colon + 1, colon + 1, f" {{roles: {_flow(roles)}}}"
        return value.start_mark.index, value.end_mark.index, f"{{roles: {_flow(roles)}}}"
    raise CommandExecutionError(f"hosts.{host} is neither a mapping nor empty: cannot give it roles")


def move_masterdb(text, old, new):
    """
    The inventory YAML text with the masterdb role moved from host ``old`` to host ``new``: only the two hosts'
    ``roles`` change (a host without ``roles``, whose name gives them, gets them explicitly: ``db1-masterdb``
    cannot be renamed, so it gets ``roles: [db]``); comments and layout are kept. The result is validated and
    checked to differ from the original in those two roles lists only. Raises CommandExecutionError.
    """
    inventory = logic.load_yaml(text)
    hosts = inventory.get("hosts") if isinstance(inventory, dict) else None
    for host in (old, new):
        if not isinstance(hosts, dict) or host not in hosts:
            raise CommandExecutionError(f"host {host} is not in the inventory's hosts")
    old_roles = [role for role in _effective_roles(old, hosts[old]) if role != "masterdb"]
    new_roles = _effective_roles(new, hosts[new])
    if "masterdb" not in _effective_roles(old, hosts[old]):
        raise CommandExecutionError(f"the inventory does not give {old} the masterdb role")
    if "db" not in new_roles:
        raise CommandExecutionError(f"{new} has no db role in the inventory")
    if "masterdb" not in new_roles:
        new_roles.append("masterdb")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    hosts_node = _child(_inventory_node(root), "hosts")
    edits = sorted(
        (_roles_edit(text, host, roles, hosts_node) for host, roles in ((old, old_roles), (new, new_roles))),
        reverse=True,
    )
    edited = text
    for start, end, replacement in edits:
        edited = edited[:start] + replacement + edited[end:]
    wanted = copy.deepcopy(inventory)
    for host, roles in ((old, old_roles), (new, new_roles)):
        wanted["hosts"][host] = dict(wanted["hosts"][host] or {}, roles=roles)
    try:
        result = logic.load_yaml(edited)
    except logic.InventoryError as err:
        raise CommandExecutionError(f"editing the inventory went wrong ({err}): move masterdb by hand") from err
    if result != wanted:
        raise CommandExecutionError(
            f"editing the inventory changed more than the roles of {old} and {new}: move masterdb by hand"
        )
    errors = logic.validate(result)
    if errors:
        raise CommandExecutionError("the inventory with masterdb moved is invalid:\n  - " + "\n  - ".join(errors))
    return edited
