"""`pip install .` works as well as the classic sync: Salt finds our loader dirs through entry points."""

import subprocess
import sys

import pytest

from tests.support.paths import EXAMPLE_INVENTORY
from tests.support.paths import PILLAR_EXAMPLE
from tests.support.paths import REPO


@pytest.fixture(scope="module")
def installed(test_root):
    target = test_root / "pip-target"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


@pytest.fixture(scope="module")
def salt_call(installed, test_root):
    conf = test_root / "pip-minion"
    conf.mkdir()
    (conf / "minion").write_text(
        f"id: app1\nroot_dir: {conf}\nfile_client: local\nuser: root\n"
        f"pillar_roots: {{base: [{PILLAR_EXAMPLE}]}}\n"
        "ext_pillar:\n  - rolestack: {inventory: inventory.yaml}\n"
        f"log_file: {conf}/minion.log\n"
    )
    salt_call_bin = REPO / ".venv" / "bin" / "salt-call"
    env = {"PYTHONPATH": str(installed), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def run(*args):
        return subprocess.run(
            [str(salt_call_bin), "-c", str(conf), "--local", "--out=json", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=str(conf),
            timeout=120,
        )

    return run


def test_installed_package_holds_the_loader_dirs(installed):
    for name in ("_modules/inventory.py", "_pillar/rolestack.py", "_utils/rolestack_inventory.py"):
        assert (installed / "rolestack" / name).is_file()
    assert list(installed.glob("rolestack-*.dist-info/entry_points.txt"))


def test_modules_and_utils_load_without_sync(salt_call):
    ret = salt_call("inventory.validate", f"path={EXAMPLE_INVENTORY}")
    assert ret.returncode == 0, ret.stderr
    assert '"local": true' in ret.stdout


def test_ext_pillar_loads_without_sync(salt_call):
    ret = salt_call("pillar.get", "rolestack:host:roles", "unmask=True")
    assert ret.returncode == 0, ret.stderr
    assert '"app"' in ret.stdout


def test_console_script(installed):
    ret = subprocess.run(
        [sys.executable, "-m", "rolestack.cli", "validate", str(EXAMPLE_INVENTORY)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(installed)},
        cwd="/",
    )
    assert ret.returncode == 0 and "valid" in ret.stdout, ret.stderr
