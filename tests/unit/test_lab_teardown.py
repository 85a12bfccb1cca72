"""
The lab's teardown signals a PID only after checking that the process is the lab's own (lab/rolestack_lab.py):
its command line and its network namespace, read from /proc. Here /proc and /run/netns are fake directories.
"""

import os
import signal
import sys

import pytest

from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "lab"))
import rolestack_lab


class FakeSystem:
    """A fake /proc (cmdline, ns/net, task/<pid>/children) and /run/netns; a namespace is a file, its inode the id."""

    def __init__(self, root):
        self.proc = root / "proc"
        self.netns = root / "netns"
        self.proc.mkdir()
        self.netns.mkdir()
        (root / "outside-ns").write_text("")
        self.outside = root / "outside-ns"

    def namespace(self, name):
        path = self.netns / name
        path.write_text("")
        return path

    def process(self, pid, argv, netns=None, children=(), title=False):
        """A process: argv NUL-separated (or one string, as salt's daemons rewrite it), in netns (a path)."""
        pdir = self.proc / str(pid)
        (pdir / "ns").mkdir(parents=True)
        text = " ".join(argv) if title else "\0".join(argv) + "\0"
        (pdir / "cmdline").write_bytes(text.encode())
        os.link(netns or self.outside, pdir / "ns" / "net")  # same inode as the namespace
        task = pdir / "task" / str(pid)
        task.mkdir(parents=True)
        (task / "children").write_text(" ".join(str(child) for child in children))


@pytest.fixture
def system(tmp_path, monkeypatch):
    fake = FakeSystem(tmp_path)
    monkeypatch.setattr(rolestack_lab, "PROC", fake.proc)
    monkeypatch.setattr(rolestack_lab, "NETNS_DIR", fake.netns)
    return fake


@pytest.fixture
def lab():
    handle = rolestack_lab.Lab("unitlab")
    handle.state = {"hosts": {"db2": {"nspawn_pid": 200}, "salt": {}}, "salt_host": "salt"}
    return handle


def nspawn_argv(lab, host, machine=None, root=None):
    return [
        "systemd-nspawn", "-b", "-q", "-D", str(root or lab.host_dir(host) / "merged"), "--register=no",
        "-M", machine or lab.machine(host), f"--network-namespace-path=/run/netns/{lab.netns(host)}",
    ]  # fmt: skip


def power_argv(lab, socket=None, name=None):
    return ["/venv/bin/python", "/repo/lab/rolestack_power.py", "serve", str(socket or lab.power_socket),
            name or lab.name]  # fmt: skip


def test_nspawn_of_the_host_with_its_container_in_the_host_namespace(system, lab):
    db2_ns = system.namespace(lab.netns("db2"))
    system.process(200, nspawn_argv(lab, "db2"), children=[201])
    system.process(201, ["/lib/systemd/systemd"], netns=db2_ns)
    assert rolestack_lab.is_lab_nspawn(lab, "db2", 200)
    # the same command line once the container is gone (shutting down): still the host's nspawn
    system.process(300, nspawn_argv(lab, "db2"))
    assert rolestack_lab.is_lab_nspawn(lab, "db2", 300)


@pytest.mark.parametrize(
    "argv",
    [
        lambda lab: nspawn_argv(lab, "db2", machine="rs-other-db2"),  # another lab's machine
        lambda lab: nspawn_argv(lab, "db2", root="/var/lib/machines/db2"),  # another tree
        lambda lab: nspawn_argv(lab, "app1"),  # another host of the lab
        lambda lab: ["vim", *nspawn_argv(lab, "db2")[1:]],  # a command that only mentions the lab
        lambda lab: ["sleep", "1000"],  # PID reused by anything else
    ],
)
def test_not_the_host_nspawn(system, lab, argv):
    system.namespace(lab.netns("db2"))
    system.process(200, argv(lab))
    assert not rolestack_lab.is_lab_nspawn(lab, "db2", 200)


def test_nspawn_whose_container_is_outside_the_lab_namespace_is_not_the_lab_one(system, lab):
    system.namespace(lab.netns("db2"))
    system.process(200, nspawn_argv(lab, "db2"), children=[201])
    system.process(201, ["/lib/systemd/systemd"])  # the machine's own namespace
    assert not rolestack_lab.is_lab_nspawn(lab, "db2", 200)


def test_power_switch_of_the_lab(system, lab):
    system.process(100, power_argv(lab))
    system.process(101, power_argv(lab, socket="/tmp/other.sock"))  # another socket
    system.process(102, power_argv(lab, name="otherlab"))  # another lab
    system.process(103, ["/usr/bin/tail", "-f", *power_argv(lab)[1:]])  # not its command line: its arguments read
    assert [pid for pid in (100, 101, 102, 103) if rolestack_lab.is_lab_power_switch(lab, pid)] == [100]


def test_lab_processes_are_found_by_namespace_or_nspawn_never_by_a_name_in_the_command_line(system, lab):
    db2_ns = system.namespace(lab.netns("db2"))
    system.process(200, nspawn_argv(lab, "db2"), children=[201])
    system.process(201, ["/lib/systemd/systemd"], netns=db2_ns)
    system.process(202, ["/usr/sbin/mariadbd"], netns=db2_ns)
    system.process(400, ["tail", "-f", str(lab.dir / "master" / "master.log"), f"rs-{lab.name}-db2"])
    assert sorted(rolestack_lab.lab_processes(lab)) == [200, 201, 202]


def test_down_signals_only_checked_pids(system, lab, monkeypatch):
    """cmd_down: a power switch PID naming someone else's process, and a stray, are checked before any signal."""
    salt_ns = system.namespace(lab.netns("salt"))
    system.process(100, ["/usr/bin/python3", "someone-elses-daemon"], netns=None)
    system.process(101, ["/usr/sbin/gdnsd"], netns=salt_ns)
    system.process(102, ["/usr/bin/sleep", "100"])  # listed by `ip netns pids` but no longer in it (PID reuse)
    lab.state = {"hosts": {}, "salt_host": "salt", "power_pid": 100}
    monkeypatch.setattr(rolestack_lab, "lab_mounts", lambda lab: [])

    class Proc:
        stdout = "101\n102\n"

    def fake_run(cmd, check=True, **kwargs):
        cmd = [str(part) for part in cmd]
        if cmd[:3] == ["ip", "netns", "pids"]:
            return Proc()
        if cmd[:3] == ["ip", "netns", "del"]:
            (system.netns / cmd[3]).unlink()
        return None

    monkeypatch.setattr(rolestack_lab, "run", fake_run)
    killed = []
    monkeypatch.setattr(rolestack_lab.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    rolestack_lab.cmd_down(lab, quiet=True)
    assert killed == [(101, signal.SIGKILL)]
