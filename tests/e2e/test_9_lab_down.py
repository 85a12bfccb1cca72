"""`make lab-down` leaves no namespace, mount, bridge or process behind (runs last: numbered 9)."""

import subprocess

import pytest

from tests.e2e.conftest import REUSE
from tests.e2e.conftest import lab_cli
from tests.e2e.conftest import rolestack_lab


@pytest.mark.skipif(REUSE, reason="ROLESTACK_E2E_REUSE=1 keeps the lab up")
def test_lab_down_leaves_nothing_behind(lab):
    handle = lab.lab
    inodes = rolestack_lab.lab_netns_inodes(handle)
    assert inodes and rolestack_lab.lab_processes(handle)  # the checks below can fail
    proc = lab_cli("down", timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert rolestack_lab.lab_namespaces(handle) == []
    assert rolestack_lab.lab_mounts(handle) == []
    # no process is left in a namespace the lab made (even one whose /run/netns entry is gone)
    assert rolestack_lab.lab_processes(handle, netns_inodes=inodes) == []
    assert not handle.dir.exists()
    # nothing was ever added to the machine's own namespace: no lab veth or bridge here
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "p-db2" not in links and "rolestack" not in links
