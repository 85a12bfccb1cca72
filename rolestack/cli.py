"""
``rolestack-inventory``: validate inventory files without a master, e.g. from a git pre-commit or
pre-receive hook. Exit status 0 when every file is valid, 1 otherwise; errors go to stderr.

    rolestack-inventory validate pillar/inventory.yaml
    git show :inventory.yaml | rolestack-inventory validate -
"""

import argparse
import importlib.util
import os
import sys


def _inventory_logic():
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (
        os.path.join(here, "_utils", "rolestack_inventory.py"),
        os.path.join(os.path.dirname(here), "_utils", "rolestack_inventory.py"),
    ):
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location("rolestack_inventory", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise SystemExit("rolestack-inventory: cannot find _utils/rolestack_inventory.py")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="rolestack-inventory", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate", help="validate inventory files ('-' reads stdin)")
    check.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    logic = _inventory_logic()
    failed = False
    for name in args.files:
        try:
            text = sys.stdin.read() if name == "-" else open(name, encoding="utf-8").read()  # noqa: SIM115
            errors = logic.validate(logic.load_yaml(text, name))
        except logic.InventoryError as err:
            errors = err.errors
        except OSError as err:
            errors = [f"cannot read: {err}"]
        if errors:
            failed = True
            print(str(logic.InventoryError(errors, name)), file=sys.stderr)
        else:
            print(f"{name}: valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
