"""
The lab's first highstate in waves (lab/rolestack_lab.py wave_steps): a host the inventory gives no address (its
address comes from the mine, at its first highstate) runs before the wave of every other host, so the hosts that
name it (a key-value firewall admitting a web host, /etc/hosts) know its address in their first run; the full
profile's second highstate then changed nothing (it changed 9 states: frontend1's /etc/hosts and four firewalls).
"""

import sys
import types

import yaml

from tests.support.paths import PILLAR_EXAMPLE
from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "lab"))
import rolestack_lab


def lab_with(tmp_path, hosts):
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump({"hosts": hosts}))
    return types.SimpleNamespace(pillar_repo=tmp_path)


def test_a_host_without_address_runs_before_every_other_host(tmp_path):
    example = yaml.safe_load((PILLAR_EXAMPLE / "inventory.yaml").read_text())
    steps = rolestack_lab.wave_steps(lab_with(tmp_path, example["hosts"]))
    titles = [title.split(":")[0] for title, _ in steps]
    assert titles == ["the salt host", "masterdb", "the hosts the mine gives an address", "every other host",
                      "the salt host again (known_hosts)"]  # fmt: skip
    assert steps[2][1] == ["-L", "frontend1"]


def test_no_extra_wave_when_every_host_has_an_address(tmp_path):
    steps = rolestack_lab.wave_steps(lab_with(tmp_path, {"salt": {"address": "10.10.10.2"}, "app1": {"address": "x"}}))
    assert [title.split(":")[0] for title, _ in steps] == [name for name, _ in rolestack_lab.WAVES]
