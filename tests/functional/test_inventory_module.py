"""The inventory execution module through the loader."""

import pytest
from salt.exceptions import CommandExecutionError
from salt.exceptions import SaltInvocationError

from tests.support.paths import EXAMPLE_INVENTORY


@pytest.fixture
def inventory_mod(make_loaders):
    return make_loaders("salt").modules.inventory


def test_validate_example(inventory_mod):
    assert inventory_mod.validate(path=str(EXAMPLE_INVENTORY)) is True


def test_validate_reports_every_error(inventory_mod):
    text = (
        EXAMPLE_INVENTORY.read_text()
        .replace("level: production", "level: Prod")
        .replace("address: 10.10.10.12", "address: 10.10.10.11")
    )
    with pytest.raises(CommandExecutionError) as err:
        inventory_mod.validate(text=text)
    assert "level: got 'Prod'" in str(err.value)
    assert "hosts.db2.address: 10.10.10.11 is already the address of db1-masterdb" in str(err.value)


def test_validate_needs_one_source(inventory_mod):
    with pytest.raises(SaltInvocationError):
        inventory_mod.validate()
    with pytest.raises(CommandExecutionError, match="cannot read"):
        inventory_mod.validate(path="/nonexistent/inventory.yaml")


def test_roles_from_name(inventory_mod):
    assert inventory_mod.roles_from_name("db1-masterdb") == {"roles": ["db", "masterdb"], "cluster": None}
    with pytest.raises(SaltInvocationError, match="'web' in the host name is not a role"):
        inventory_mod.roles_from_name("web1")


def test_host_pillar(inventory_mod):
    pillar = inventory_mod.host_pillar("sessions1", path=str(EXAMPLE_INVENTORY))
    assert pillar["sessions"]["allow"] == ["10.10.10.51/32", "10.10.10.52/32"]


def test_master_acl_is_the_utils(inventory_mod):
    import rolestack_inventory as inv

    expected = inv.master_acl(inv.load_yaml(EXAMPLE_INVENTORY.read_text()))
    assert inventory_mod.master_acl(path=str(EXAMPLE_INVENTORY)) == expected
    with pytest.raises(CommandExecutionError, match="level: got 'Prod'"):
        inventory_mod.master_acl(text=EXAMPLE_INVENTORY.read_text().replace("level: production", "level: Prod"))
    with pytest.raises(CommandExecutionError, match="invalid rolestack inventory in <text>"):
        inventory_mod.master_acl(text="")
