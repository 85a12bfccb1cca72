"""The pip-installed package carries every util as a top-level module (docs/development.md, "Importing utils")."""

import configparser

from tests.support.paths import REPO


def test_every_util_is_installed_as_a_top_level_module():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    listed = set(config["options"]["py_modules"].split())
    utils = {path.stem for path in (REPO / "_utils").glob("*.py")}
    assert listed == utils
