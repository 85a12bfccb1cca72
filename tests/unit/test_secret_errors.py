"""No error text ever shows a secret's value: validation errors give its type (and length), YAML errors no source."""

import copy

import pytest
import rolestack_inventory as inv
import yaml

from tests.support.paths import EXAMPLE_INVENTORY

SENTINEL = "SENTINEL-pw-Zq7!x9#0123456789"  # long enough to be a valid secret: only its place is wrong
SHORT = "SENTINEL-short"


@pytest.fixture
def example():
    return inv.load_yaml(EXAMPLE_INVENTORY.read_text(), str(EXAMPLE_INVENTORY))


def _errors(data):
    errors = inv.validate(data)
    assert errors, "the change must be an error"
    return str(inv.InventoryError(errors, "inventory.yaml"))


def _set(data, path, value):
    *parents, last = path
    for key in parents:
        data = data[key]
    data[last] = value


# (where the value goes, the value, the key path the error must name)
VALIDATION_CASES = [
    # a secret of the wrong type or too short
    (("secrets", "replication_password"), SHORT, "secrets.replication_password: got a str of length 14"),
    (("secrets", "replication_password"), [SENTINEL], "secrets.replication_password: got a list"),
    (("secrets", "replication_password"), {"value": SENTINEL}, "secrets.replication_password: got a dict"),
    (("secrets", "replication_password"), 1234567890123456789, "secrets.replication_password: got an int"),
    # an unknown secret name, or a key that is not a name at all (a value typed where a name goes)
    (("secrets", "replicaton_password"), SENTINEL, "secrets.replicaton_password: unknown secret"),
    (("secrets", f"replication_password {SENTINEL}"), SENTINEL, "secrets.<a str of length"),
    # the whole secrets section is not a mapping
    (("secrets",), SENTINEL, "secrets: got a str of length"),
    (("secrets",), [SENTINEL], "secrets: got a list"),
    # application account passwords
    (("secrets", "db_users", "wiki"), SHORT, "secrets.db_users.wiki: got a str of length 14"),
    (("secrets", "db_users", "wiki"), [SENTINEL], "secrets.db_users.wiki: got a list"),
    (("secrets", "db_users", "nosuchuser"), SENTINEL, "secrets.db_users.nosuchuser: no such user"),
    (("secrets", "db_users", f"{SENTINEL}!"), SENTINEL, "secrets.db_users.<a str of length"),
    (("secrets", "db_users"), SENTINEL, "secrets.db_users: got a str of length"),
    # a secret in the wrong place
    (("replication_password",), SENTINEL, "replication_password: unknown key (value: a str of length"),
    (("hosts", "db2", "replication_password"), SENTINEL, "hosts.db2.replication_password: unknown key"),
    (("hosts", "db2"), SENTINEL, "hosts.db2: got a str of length"),
    (("hosts", "wiki"), SENTINEL, "hosts.wiki: got a str of length"),
    (("hosts",), SENTINEL, "hosts: got a str of length"),
    (("db", "replication_password"), SENTINEL, "db.replication_password: unknown key"),
    (("db",), SENTINEL, "db: got a str of length"),
    (("aliases",), SENTINEL, "aliases: got a str of length"),
    (("databases", "wiki", "password"), SENTINEL, "databases.wiki.password: unknown key"),
    (("databases", "wiki", "users", "wiki", "password"), SENTINEL, "databases.wiki.users.wiki.password: unknown key"),
    (("databases", "wiki", "users", "wiki"), SENTINEL, "databases.wiki.users.wiki: got a str of length"),
    (("databases", "wiki", "users"), SENTINEL, "databases.wiki.users: got a str of length"),
    (("databases", "wiki"), SENTINEL, "databases.wiki: got a str of length"),
    (("databases",), SENTINEL, "databases: got a str of length"),
]


@pytest.mark.parametrize(("path", "value", "names"), VALIDATION_CASES, ids=[".".join(c[0]) for c in VALIDATION_CASES])
def test_validation_errors_never_show_a_secret(example, path, value, names):
    data = copy.deepcopy(example)
    _set(data, path, value)
    message = _errors(data)
    assert names in message
    assert "SENTINEL" not in message and "Zq7!x9" not in message


def test_the_whole_inventory_being_a_secret_is_not_shown():
    message = str(inv.InventoryError(inv.validate(SENTINEL)))
    assert "<top>: got a str of length" in message and SENTINEL not in message


def _text_with_secrets(secrets_block):
    """The example inventory's text with its secrets section (its last key) replaced by ``secrets_block``."""
    text = EXAMPLE_INVENTORY.read_text()
    return text[: text.index("\nsecrets:") + 1] + secrets_block


YAML_CASES = {
    "duplicate secret": f"secrets:\n  replication_password: {SENTINEL}\n  replication_password: {SENTINEL}\n",
    "duplicate db user": f"secrets:\n  db_users:\n    wiki: {SENTINEL}\n    wiki: {SENTINEL}\n",
    "unclosed double quote": f'secrets:\n  replication_password: "{SENTINEL}\n',
    "unclosed single quote": f"secrets:\n  replication_password: '{SENTINEL}\n",
    "colon in a plain value": f"secrets:\n  replication_password: {SENTINEL}: x\n",
    "bad escape": f'secrets:\n  replication_password: "{SENTINEL}\\q"\n',
    "a tag": f"secrets:\n  replication_password: !{SENTINEL} x\n",
    "an alias": f"secrets:\n  replication_password: *{SENTINEL}\n",
    "a reserved character": f"secrets:\n  replication_password: @{SENTINEL}\n",
    "a tab": f"secrets:\n\treplication_password: {SENTINEL}\n",
    "a list item in the mapping": f"secrets:\n  replication_password: {SENTINEL}\n  - {SENTINEL}\n",
    "flow style": f"secrets: {{replication_password: {SENTINEL}, x: }}}}\n",
    "under rolestack:inventory": f"rolestack:\n  inventory:\n    secrets:\n      a: '{SENTINEL}\n",
    "quoted key": f"'secrets':\n  replication_password: \"{SENTINEL}\n",
    "a block scalar": f"secrets:\n  replication_password: |\n    {SENTINEL}\n   bad: [\n",
}


@pytest.mark.parametrize("block", YAML_CASES.values(), ids=YAML_CASES.keys())
def test_yaml_errors_never_quote_a_secrets_line(block):
    for text in (block, _text_with_secrets(block)):
        with pytest.raises(inv.InventoryError) as err:
            inv.load_yaml(text, "inventory.yaml")
        message = str(err.value)
        assert "YAML:" in message and "line " in message
        assert "SENTINEL" not in message and "Zq7!x9" not in message  # not even a part of it
        # nor through the exception chain, which a logged traceback would print
        assert err.value.__cause__ is None and err.value.__suppress_context__


def test_yaml_errors_still_say_where_and_what():
    with pytest.raises(inv.InventoryError, match=r"found duplicate key 'db2' \(first at line 2\) \(line 3, column 3\)"):
        inv.load_yaml("hosts:\n  db2: {}\n  db2: {}\n")
    # outside a secrets section the quoted token stays (it helps), the source line never shows
    with pytest.raises(inv.InventoryError) as err:
        inv.load_yaml('level: "prod\\q"\nsecrets: {}\n')
    assert "found unknown escape character 'q' (line 1, column 14)" in str(err.value)
    assert "level:" not in str(err.value).split("YAML:")[1]


def test_a_yaml_error_that_is_not_marked():
    assert inv.yaml_error_text(yaml.YAMLError("anything " + SENTINEL), "") == "YAML: YAMLError"
