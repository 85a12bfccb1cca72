"""
The example inventory's db hosts (pillar.example/inventory.yaml) as the db runner and its decisions see them:
their names, zone and server ids, a third db host, and the rolestack pillar a host gets.
"""

import rolestack_inventory as logic

from tests.support.paths import EXAMPLE_INVENTORY

EXAMPLE = EXAMPLE_INVENTORY.read_text()
ZONE = "production.wpdn"
DB1, DB2, DB3 = "db1-masterdb", "db2", "db3"
S1, S2, S3 = 168430091, 168430092, 168430093


def pillar_of(host, text=EXAMPLE):
    inventory = logic.load_yaml(text)
    return logic.pillar_for(logic.derive(inventory), host, ZONE)


def three_db_inventory():
    """The example inventory with a third db host."""
    return EXAMPLE.replace(
        "  db2:\n    address: 10.10.10.12\n", "  db2:\n    address: 10.10.10.12\n  db3:\n    address: 10.10.10.13\n"
    )
