"""
``rolestack-inventory``: validate inventory files without a master, e.g. from a git pre-commit or
pre-receive hook, and print the master settings derived from an inventory. Exit status 0 when every file is
valid, 1 otherwise; errors go to stderr.

    rolestack-inventory validate pillar/inventory.yaml
    git show :inventory.yaml | rolestack-inventory validate -
    git show "$new:inventory.yaml" | rolestack-inventory validate --stdin-name "inventory.yaml@$new" -
    rolestack-inventory master-acl pillar/inventory.yaml > /etc/salt/master.d/rolestack-peer.conf
"""

import argparse
import os
import sys


def _inventory_logic():
    # installed: the utils are top-level modules; a source checkout (python -m rolestack.cli): its _utils directory
    checkout_utils = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_utils")
    if os.path.isdir(checkout_utils) and checkout_utils not in sys.path:
        sys.path.insert(0, checkout_utils)
    try:
        import rolestack_inventory
    except ImportError as err:
        raise SystemExit(f"rolestack-inventory: cannot import the rolestack utils ({err})")
    return rolestack_inventory


def main(argv=None):
    parser = argparse.ArgumentParser(prog="rolestack-inventory", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="validate inventory files ('-' reads stdin)")
    check.add_argument("files", nargs="+")
    check.add_argument(
        "--stdin-name", default="-", help="the name of '-' (stdin) in messages, e.g. a pre-receive hook's commit:path"
    )
    acl = sub.add_parser(
        "master-acl",
        help="print the master's peer/peer_run settings for an inventory ('-' reads stdin), a master.d file",
    )
    acl.add_argument("file")
    host = sub.add_parser("salt-host", help="print the name (minion id) of the inventory's host with role salt")
    host.add_argument("file")
    args = parser.parse_args(argv)
    logic = _inventory_logic()
    if args.command == "master-acl":
        return _print_master_acl(logic, args.file)
    if args.command == "salt-host":
        return _print_salt_host(logic, args.file)
    failed = False
    for name in args.files:
        try:
            errors = logic.validate(_load(logic, name, args.stdin_name))
        except logic.InventoryError as err:
            errors = err.errors
        except OSError as err:
            errors = [f"cannot read: {err}"]
        if errors:
            failed = True
            print(str(logic.InventoryError(errors, _shown(name, args.stdin_name))), file=sys.stderr)
        else:
            print(f"{_shown(name, args.stdin_name)}: valid")
    return 1 if failed else 0


def _shown(name, stdin_name="-"):
    return stdin_name if name == "-" else name


def _load(logic, name, stdin_name="-"):
    text = sys.stdin.read() if name == "-" else open(name, encoding="utf-8").read()  # noqa: SIM115
    return logic.load_yaml(text, _shown(name, stdin_name))


def _derive(logic, name, derivation):
    """derivation(inventory of the file name), or None once the reason is on stderr."""
    try:
        return derivation(_load(logic, name))
    except logic.InventoryError as err:
        print(str(logic.InventoryError(err.errors, name)), file=sys.stderr)
    except OSError as err:
        print(f"{name}: cannot read: {err}", file=sys.stderr)
    return None


def _print_master_acl(logic, name):
    import yaml

    acl = _derive(logic, name, logic.master_acl)
    if acl is None:
        return 1
    print(f"# derived from {name} by rolestack-inventory master-acl: re-run it when a db or salt host changes")
    print(yaml.safe_dump(acl, sort_keys=False, default_flow_style=False), end="")
    return 0


def _print_salt_host(logic, name):
    host = _derive(logic, name, logic.salt_host)
    if host is None:
        return 1
    print(host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
