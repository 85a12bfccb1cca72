"""Paths of the repository, shared by tests, bench and lab helpers."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
STATES = REPO / "states"
PILLAR_EXAMPLE = REPO / "pillar.example"
EXAMPLE_INVENTORY = PILLAR_EXAMPLE / "inventory.yaml"
LOADER_DIRS = {
    "module_dirs": [str(REPO / "_modules")],
    "states_dirs": [str(REPO / "_states")],
    "pillar_dirs": [str(REPO / "_pillar")],
    "runner_dirs": [str(REPO / "_runners")],
    "utils_dirs": [str(REPO / "_utils")],
}
# private files of the tests: inside the checkout, never in the shared tmp directory
TEST_ROOT = REPO / ".tmp"
