#!/usr/bin/env python3
"""
The rolestack lab: the platform of pillar.example/ on one machine, one systemd-nspawn container per host.

    rolestack_lab.py [--name LAB] up [--profile full|small]   build (cached), boot, highstate, summary
    rolestack_lab.py [--name LAB] down                        stop everything the lab made, remove it
    rolestack_lab.py [--name LAB] replace HOST                new container + key for HOST, then its highstate
    rolestack_lab.py [--name LAB] shell HOST [CMD...]         a shell (or a command) inside HOST
    rolestack_lab.py [--name LAB] salt ARGS...                the salt CLI against the lab's master
    rolestack_lab.py [--name LAB] highstate                   salt '*' state.highstate + the per-host summary
    rolestack_lab.py [--name LAB] status                      hosts, addresses, PIDs
    rolestack_lab.py [--name LAB] fence HOST                  power HOST off (db.failover's fencing hook)
    rolestack_lab.py [--name LAB] push-pillar                 push lab/run/LAB/share/pillar's main to the master
    rolestack_lab.py [--name LAB] push-states                 serve the checkout as it is now (tracked files)

Network: a bridge inside its own namespace (rolestack-LAB-sw); every host gets a namespace with one veth into it
and the inventory's address. Nothing is added to the machine's own namespace. The salt host's container is made
the master with the operator's command, bootstrap/master.sh (docs/roles/salt.md, "Bootstrap"), run inside it: the
checkout is bind-mounted read-only at /opt/rolestack/src, and lab/run/LAB/share at /srv/lab (the pillar clone the
lab commits to, a snapshot of the checkout as the states repository, the power switch's socket). Every other
minion is admitted by its fingerprint (salt-run minion_key.admit). A pillar edit: commit it in
lab/run/LAB/share/pillar, then push-pillar (a git push inside the salt container, through pillar.git's hooks).
"""

import argparse
import concurrent.futures
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "_utils"))
import rolestack_highstate  # noqa: E402
import rolestack_inventory  # noqa: E402

CACHE = REPO / "lab" / "cache"
RUN = REPO / "lab" / "run"
# resolved: a second checkout may link .venv to another one's, and the scripts' #! lines name the real path
# (the one bind-mounted into the hosts)
VENV = (REPO / ".venv").resolve()
PYTHON_HOME = Path(sys.base_prefix)  # the interpreter the venv uses; bind-mounted read-only into hosts
SUITE_FALLBACK = "bookworm"

PROFILES = {
    "full": None,  # every host of pillar.example/inventory.yaml
    "small": [
        "salt",
        "db1-masterdb",
        "db2",
        "sessions1",
        "memcache-alpha1",
        "memcache-alpha2",
        "redis-beta1",
        "app1",
        "backup",
        "elastic1",
    ],  # one host per role the platform has so far, two where a role's test needs a pair (db, a cache cluster);
    # elastic1 runs no ElasticSearch (not installable here): it is the NFS share's client in the hostile battery
}

# What the base root filesystem holds: systemd and the libraries the host's Python needs (salt runs from the
# bind-mounted venv), then every package the role states install, so a highstate installs nothing it need not.
BASE_INCLUDE = [
    "systemd", "systemd-sysv", "dbus", "iproute2", "procps", "python3", "ca-certificates", "openssl", "less",
    "libbz2-1.0", "libexpat1", "libffi8", "liblzma5", "libncursesw6", "libnsl2", "libreadline8", "libsqlite3-0",
    "libssl3", "libtirpc3", "libuuid1", "zlib1g", "libstdc++6",
]  # fmt: skip
ROLE_PACKAGES = [
    "mariadb-server", "mariadb-client", "mariadb-backup", "redis-server", "memcached", "nutcracker", "gdnsd",
    "rsync", "xinetd", "openssh-server", "exim4-daemon-light", "opendkim", "opendkim-tools", "nfs-ganesha",
    "nfs-ganesha-vfs", "libnfs-utils", "bind9-dnsutils", "git", "nftables", "libmemcached-tools",
]  # fmt: skip
# Only in the local repository (they conflict with the base's MTA): states install them where a role needs them.
REPO_ONLY_PACKAGES = ["postfix"]
# Installed but not started at boot: the role states enable what a host needs.
DISABLED_UNITS = [
    "mariadb.service", "redis-server.service", "memcached.service", "nutcracker.service", "gdnsd.service",
    "xinetd.service", "opendkim.service", "nfs-ganesha.service", "rsync.service", "nftables.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer",
]  # fmt: skip
# NFS helpers that make a container's shutdown hang forever (no rpc in this kernel).
MASKED_UNITS = ["rpcbind.service", "rpcbind.socket", "run-rpc_pipefs.mount", "nfs-ganesha-lock.service"]
BASE_VERSION = hashlib.sha256(
    json.dumps([BASE_INCLUDE, ROLE_PACKAGES, REPO_ONLY_PACKAGES, DISABLED_UNITS, MASKED_UNITS, 2]).encode()
).hexdigest()[:16]

PROC = Path("/proc")
NETNS_DIR = Path("/run/netns")

# inside the salt host's container: the checkout (read-only, where docs/roles/salt.md clones it) and the lab's share
SRC_IN_HOST = "/opt/rolestack/src"
SHARE_IN_HOST = "/srv/lab"

CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}


class LabError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------- output


def say(message):
    print(message, flush=True)


@contextlib.contextmanager
def step(title):
    say(f"==> {title}")
    start = time.monotonic()
    yield
    say(f"    done in {time.monotonic() - start:.1f} s")


def run(cmd, check=True, capture=True, env=None, input=None, timeout=None, cwd=None):
    proc = subprocess.run(
        [str(part) for part in cmd],
        cwd=cwd,
        check=False,
        capture_output=capture,
        text=True,
        env=env,
        input=input,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        detail = ((proc.stdout or "")[-2500:] + (proc.stderr or "")[-1500:]).strip() if capture else ""
        raise LabError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{detail}")
    return proc


# ---------------------------------------------------------------------------------------------------- cache


def apt_mirror(suite):
    """The Debian mirror the machine's own apt configuration uses for `suite` (never a hard-coded host)."""
    sources = []
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith((" ", "#")):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes") != "no" and "deb" in fields.get("types", "").split():
                sources += [(uri, fields.get("suites", "").split()) for uri in fields.get("uris", "").split()]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt").glob("sources.list.d/*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                match = re.match(r"deb\s+(?:\[[^]]*]\s+)?(\S+)\s+(\S+)", line.strip())
                if match:
                    sources.append((match.group(1), [match.group(2)]))
    for uri, suites in sources:
        if suite in suites:
            return uri
    raise LabError(f"no apt source for {suite!r} in /etc/apt: cannot choose a mirror for debootstrap")


def machine_suite():
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"') or SUITE_FALLBACK
    return SUITE_FALLBACK


def in_chroot(root, script, binds=()):
    """Run a shell script in the base tree (not booted), with the machine's network for apt."""
    cmd = ["systemd-nspawn", "-q", "-D", root, "--register=no", "--keep-unit", "--timezone=off"]
    cmd += [f"--bind-ro={src}:{dst}" for src, dst in binds]
    cmd += ["-E", "DEBIAN_FRONTEND=noninteractive", "sh", "-euc", script]
    proc = run(cmd, env={**os.environ, **CLEAN_ENV}, check=False)
    log = CACHE / "build.log"
    with open(log, "a") as handle:
        handle.write(f"$ {script}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        raise LabError(
            f"building the base failed ({proc.returncode}); the full output is in {log}:\n{proc.stderr[-1500:]}"
        )
    return proc


def build_base():
    """lab/cache/base (root filesystem) and lab/cache/repo (local apt repository), once per BASE_VERSION."""
    base, repo, stamp = CACHE / "base", CACHE / "repo", CACHE / "base.version"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == BASE_VERSION and (repo / "Packages").exists():
            say(f"==> base root filesystem: cached ({base})")
            return
        suite = machine_suite()
        mirror = apt_mirror(suite)
        work = Path(tempfile.mkdtemp(prefix="base-", dir=CACHE))
        work.chmod(0o755)  # it becomes the containers' "/": services dropping root must traverse it
        try:
            with step(f"debootstrap {suite} (minbase + systemd; mirror from the machine's apt configuration)"):
                run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_INCLUDE)}", suite, work, mirror])
            with step("role packages into the base, and the local apt repository for the containers"):
                _install_role_packages(work, repo)
            with step("base configuration (services off by default, NFS helpers masked, salt minion unit)"):
                _configure_base(work, repo)
            if base.exists():
                shutil.rmtree(base)
            work.rename(base)
            stamp.write_text(BASE_VERSION + "\n")
        finally:
            if work.exists() and not os.environ.get("LAB_KEEP_FAILED_BUILD"):
                shutil.rmtree(work, ignore_errors=True)


def _install_role_packages(root, repo):
    # the machine's own sources (same mirror and suites), validity checks as the machine does them
    shutil.copytree("/etc/apt/sources.list.d", root / "etc/apt/sources.list.d", dirs_exist_ok=True)
    for path in (root / "etc/apt/sources.list.d").iterdir():
        if not path.name.endswith((".list", ".sources")):
            path.unlink()
    (root / "etc/apt/sources.list").write_text("")
    (root / "etc/apt/apt.conf.d/90lab-build").write_text(
        'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n'
    )
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    archives = "/var/cache/apt/archives"
    in_chroot(
        root,
        f"""
        apt-get update -qq
        apt-get install -y -qq --download-only {" ".join(ROLE_PACKAGES)}
        apt-get install -y -qq --download-only {" ".join(REPO_ONLY_PACKAGES)}
        apt-get install -y -qq {" ".join(ROLE_PACKAGES)}
        """,
    )
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    for deb in (root / archives.lstrip("/")).glob("*.deb"):
        shutil.move(str(deb), repo / deb.name)
    # paths in Packages are relative to the repository's root
    (repo / "Packages").write_text(run(["dpkg-scanpackages", "-m", "."], cwd=repo).stdout)
    in_chroot(root, "apt-get clean; rm -rf /var/lib/apt/lists/*")
    (root / "usr/sbin/policy-rc.d").unlink()


def _configure_base(root, repo):
    shutil.rmtree(root / "etc/apt/sources.list.d")
    (root / "etc/apt/sources.list.d").mkdir()
    (root / "etc/apt/apt.conf.d/90lab-build").unlink()
    # containers have no network beyond the lab: the local repository is their only source
    (root / "etc/apt/sources.list").write_text("deb [trusted=yes] file:/srv/repo ./\n")
    units = " ".join(DISABLED_UNITS)
    in_chroot(
        root,
        f"""
        apt-get update -qq
        for unit in {units}; do systemctl disable "$unit" >/dev/null 2>&1 || true; done
        systemctl mask {" ".join(MASKED_UNITS)} >/dev/null 2>&1
        """,
        binds=[(repo, "/srv/repo")],
    )
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("# no resolver until the base role writes this file\n")
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- lab state


class Lab:
    def __init__(self, name):
        if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", name):
            raise LabError(f"lab name {name!r}: expected 1-10 lowercase letters/digits")
        self.name = name
        self.dir = RUN / name
        self.state_file = self.dir / "lab.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    # names --------------------------------------------------------------------------------------------
    def netns(self, host):
        return f"rolestack-{self.name}-{host}"

    @property
    def switch(self):
        return f"rolestack-{self.name}-sw"

    def machine(self, host):
        return f"rs-{self.name}-{host}"

    def host_dir(self, host):
        return self.dir / "hosts" / host

    def salt_host_path(self, path):
        """A path of the salt host's container, seen from the machine (its overlay's merged tree)."""
        return self.host_dir(self.salt_host) / "merged" / str(path).lstrip("/")

    @property
    def master_dir(self):
        """The master's configuration directory (/etc/salt of the salt host), seen from the machine."""
        return self.salt_host_path("/etc/salt")

    @property
    def share(self):
        """Bind-mounted at SHARE_IN_HOST into the salt host's container only."""
        return self.dir / "share"

    @property
    def pillar_repo(self):
        """The lab's clone of the pillar repository (commit here, then push_pillar)."""
        return self.share / "pillar"

    @property
    def states_repo(self):
        """The checkout as the lab serves it (snapshot_states): bootstrap/master.sh --states."""
        return self.share / "states.git"

    @property
    def power_socket(self):
        return self.share / "power.sock"

    def save(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        tmp.rename(self.state_file)

    @property
    def hosts(self):
        return self.state.get("hosts", {})

    @property
    def salt_host(self):
        return self.state["salt_host"]

    # plan ---------------------------------------------------------------------------------------------
    def plan(self, profile):
        """Hosts, addresses and the inventory the lab commits, from pillar.example/ and the profile."""
        inventory = rolestack_inventory.load_yaml((REPO / "pillar.example" / "inventory.yaml").read_text())
        errors = rolestack_inventory.validate(inventory)
        if errors:
            raise LabError("pillar.example/inventory.yaml is invalid:\n" + "\n".join(errors))
        wanted = PROFILES[profile]
        if wanted is not None:
            unknown = sorted(set(wanted) - set(inventory["hosts"]))
            if unknown:
                raise LabError(f"profile {profile}: hosts {unknown} are not in pillar.example/inventory.yaml")
            inventory["hosts"] = {name: spec for name, spec in inventory["hosts"].items() if name in wanted}
            aliases = {
                alias: [member for member in members if member in inventory["hosts"]]
                for alias, members in (inventory.get("aliases") or {}).items()
            }
            inventory["aliases"] = {alias: members for alias, members in aliases.items() if members}
            if not inventory["aliases"]:
                inventory.pop("aliases")
        network = ipaddress.ip_network(inventory["network"])
        taken = {spec.get("address") for spec in inventory["hosts"].values() if spec}
        free = (str(addr) for addr in reversed(list(network.hosts())) if str(addr) not in taken)
        hosts = {}
        for name, spec in inventory["hosts"].items():
            spec = spec or {}
            roles = spec.get("roles") or rolestack_inventory.roles_from_name(name)[0]
            # a host without an inventory address gets one here: the platform learns it from the mine
            hosts[name] = {"address": spec.get("address") or next(free), "roles": roles}
        salt_hosts = [name for name, host in hosts.items() if "salt" in host["roles"]]
        if len(salt_hosts) != 1:
            raise LabError(f"the lab needs exactly one host with role salt, found {salt_hosts}")
        return inventory, hosts, salt_hosts[0], network


# ---------------------------------------------------------------------------------------------------- network


def netns_exists(name):
    return (NETNS_DIR / name).exists()


def create_network(lab, hosts, network):
    run(["ip", "netns", "add", lab.switch])
    run(["ip", "-n", lab.switch, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", lab.switch, "link", "set", "br0", "up"])
    run(["ip", "-n", lab.switch, "link", "set", "lo", "up"])
    for host in hosts:
        add_host_network(lab, host, hosts[host]["address"], network.prefixlen)


def add_host_network(lab, host, address, prefixlen):
    ns = lab.netns(host)
    # the switch's end, named after the address (unique in the lab): interface names are at most 15 characters,
    # and host names cut to fit collide (memcache-alpha1, memcache-alpha2)
    port = switch_port(address)
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", lab.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "-n", lab.switch, "link", "set", port, "master", "br0", "up"])
    run(["ip", "-n", ns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])


def switch_port(address):
    """The switch's end of a host's cable, named after its address (unique in the lab)."""
    return "p-" + ipaddress.ip_address(address).packed.hex()


def set_cable(lab, host, plugged):
    """Unplug (or plug back) a host's cable at the switch: to the others it is down, unreachable."""
    port = switch_port(lab.hosts[host]["address"])
    run(["ip", "-n", lab.switch, "link", "set", port, "up" if plugged else "down"])


def lab_namespaces(lab):
    prefix = f"rolestack-{lab.name}-"
    base = NETNS_DIR
    return sorted(p.name for p in base.iterdir() if p.name.startswith(prefix)) if base.exists() else []


# ---------------------------------------------------------------------------------------------------- master


# lab-only settings of the master, beside what the bootstrap writes (master.d/rolestack.conf, rolestack-peer.conf):
# each says why a real master does not need it
LAB_MASTER_CONF = """\
# Written by lab/rolestack_lab.py: the lab's own additions to what bootstrap/master.sh configures.
# db.failover's fencing hook for a primary whose minion does not answer. Lab-only: a real platform powers a VM
# off through its hypervisor or PDU; the lab's containers are powered off by the lab's power switch on the
# machine (lab/rolestack_power.py), whose socket only this container sees. Exit 0 once the host is off.
rolestack_db_fence_command: {fence}
# Lab-only: every host of the lab shares the machine's few cores, and a state run there takes longer than on
# real VMs; salt's defaults (5 s, 10 s) give up on minions that are only slow.
timeout: 30
gather_job_timeout: 15
# Lab-only: the e2e tier and the benchmarks read job returns of the last hour; a real master keeps salt's 24 h.
keep_jobs_seconds: 3600
# Lab-only: the lab's master log at info, for reading a failed e2e run afterwards.
log_level_logfile: info
"""


def write_lab_master_conf(lab):
    fence = [str(VENV / "bin/python"), f"{SRC_IN_HOST}/lab/rolestack_power.py", "off", f"{SHARE_IN_HOST}/power.sock",
             "{host}"]  # fmt: skip
    conf = lab.master_dir / "master.d" / "lab.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(LAB_MASTER_CONF.format(fence=json.dumps(fence)))


def init_pillar_repo(lab, inventory):
    repo = lab.pillar_repo
    repo.mkdir(parents=True, exist_ok=True)
    git = ["git", "-C", repo, "-c", "user.name=rolestack lab", "-c", "user.email=lab@rolestack.invalid"]
    run(["git", "init", "-q", "-b", "main", repo])
    shutil.copy(REPO / "pillar.example" / "top.sls", repo / "top.sls")
    header = (
        "# The lab's inventory: pillar.example/inventory.yaml for this profile. Edit, commit, then\n"
        "# `rolestack_lab.py --name LAB push-pillar` (a git push to the master): the lab follows.\n"
    )
    (repo / "inventory.yaml").write_text(header + rolestack_inventory_dump(inventory))
    run([*git, "add", "-A"])
    run([*git, "commit", "-q", "-m", "lab: inventory from pillar.example/"])


def rolestack_inventory_dump(inventory):
    import yaml

    return yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False)


def snapshot_states(lab):
    """
    The checkout as it is now, as the states repository the master is bootstrapped from (and push_states serves):
    a commit of HEAD with the uncommitted edits of tracked files (through a temporary index; files never added
    are not in it), on branch main of lab/run/LAB/share/states.git.
    """
    index = Path(run(["git", "rev-parse", "--path-format=absolute", "--git-path", "index"], cwd=REPO).stdout.strip())
    env = {**CLEAN_ENV, "GIT_AUTHOR_NAME": "rolestack lab", "GIT_AUTHOR_EMAIL": "lab@rolestack.invalid",
           "GIT_COMMITTER_NAME": "rolestack lab", "GIT_COMMITTER_EMAIL": "lab@rolestack.invalid"}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")
        if index.exists():
            shutil.copy(index, env["GIT_INDEX_FILE"])
        run(["git", "add", "-u"], cwd=REPO, env=env)
        tree = run(["git", "write-tree"], cwd=REPO, env=env).stdout.strip()
    head = run(["git", "rev-parse", "HEAD"], cwd=REPO).stdout.strip()
    commit = run(["git", "commit-tree", tree, "-p", head, "-m", "lab: the checkout's working tree"], cwd=REPO,
                 env=env).stdout.strip()  # fmt: skip
    if not (lab.states_repo / "HEAD").exists():
        run(["git", "init", "-q", "--bare", "-b", "main", lab.states_repo])
    run(["git", "push", "-q", "-f", lab.states_repo, f"{commit}:refs/heads/main"], cwd=REPO, env=env)
    return commit


def bootstrap_master(lab, pillar=None, states=None):
    """
    bootstrap/master.sh inside the salt host's container, the operator's command (docs/roles/salt.md,
    "Bootstrap"), with salt-call's returns as JSON: the CompletedProcess (never raises on its exit status).
    """
    cmd = ["env", "ROLESTACK_BOOTSTRAP_OUT=--out=json", "sh", f"{SRC_IN_HOST}/bootstrap/master.sh",
           "--pillar", pillar or f"{SHARE_IN_HOST}/pillar", "--states", states or f"{SHARE_IN_HOST}/states.git",
           "--python", VENV / "bin/python"]  # fmt: skip
    return in_host(lab, lab.salt_host, *cmd, check=False, timeout=900)


def json_documents(text):
    """The JSON documents printed one after the other (salt-call --out=json, once per run)."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while True:
        start = min((i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0), default=-1)
        if start < 0:
            return docs
        try:
            doc, pos = decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        docs.append(doc)


def bootstrap_returns(proc):
    """{"bootstrap": states, "salt": states}: the returns of master.sh's two salt-call runs (local, then the role)."""
    docs = [doc["local"] for doc in json_documents(proc.stdout) if isinstance(doc, dict) and "local" in doc]
    return dict(zip(("bootstrap", "salt"), docs, strict=False))


def start_master(lab):
    """The salt host made the master by bootstrap/master.sh, with the lab's master.d/lab.conf beside it."""
    write_lab_master_conf(lab)
    proc = bootstrap_master(lab)
    if proc.returncode != 0:
        raise LabError(f"bootstrap/master.sh in {lab.salt_host} failed ({proc.returncode}):\n"
                       f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")  # fmt: skip
    wait_master(lab)
    return proc


def wait_master(lab, timeout=60):
    wait_for(lambda: salt_run(lab, "manage.status", "timeout=1", check=False).returncode == 0, timeout,
             "salt-master to answer")  # fmt: skip


def restart_master(lab):
    """systemctl restart salt-master in the salt host (its configuration read again), until it answers."""
    in_host(lab, lab.salt_host, "systemctl", "restart", "salt-master", timeout=120)
    wait_master(lab)


def push_pillar(lab):
    """
    `git push` of the lab's pillar clone (branch main) to the master's /srv/git/pillar.git, run inside the salt
    host as an operator's push over ssh would: through its pre-receive (validation) and post-receive (deploy)
    hooks. The CompletedProcess (a refused push: returncode != 0, the hook's message in stderr).
    """
    return in_host(lab, lab.salt_host, "git", "-C", f"{SHARE_IN_HOST}/pillar", "push", "-q",
                   "/srv/git/pillar.git", "main:main", check=False, timeout=300)  # fmt: skip


def pull_pillar(lab):
    """The lab's pillar clone brought to the master's branch main (after a runner's commit there, e.g. db.switchover),
    fetched on the machine from the salt host's repository (a fetch runs no hook)."""
    bare = lab.salt_host_path("/srv/git/pillar.git")
    run(["git", "-C", lab.pillar_repo, "pull", "-q", "--ff-only", bare, "main"])


def push_states(lab):
    """The checkout as it is now (snapshot_states) pushed to the master's /srv/git/states.git, inside the salt
    host (its post-receive hook serves it). Raises LabError when the push fails."""
    commit = snapshot_states(lab)
    in_host(lab, lab.salt_host, "git", f"--git-dir={SHARE_IN_HOST}/states.git", "push", "-q", "-f",
            "/srv/git/states.git", "main:main", timeout=300)  # fmt: skip
    return commit


def salt_cmd(lab, *args, check=True, timeout=None):
    """The salt CLI inside the salt host (the master's own configuration, /etc/salt)."""
    return in_host(lab, lab.salt_host, VENV / "bin/salt", *args, check=check, timeout=timeout)


def salt_run(lab, *args, check=True, timeout=None):
    return in_host(lab, lab.salt_host, VENV / "bin/salt-run", *args, check=check, timeout=timeout)


def start_power_switch(lab):
    """lab/rolestack_power.py serve, on the machine (its own mount namespace: a fenced host's overlay is unmounted
    for good); cmd_down stops it by its PID (is_lab_power_switch)."""
    lab.share.mkdir(parents=True, exist_ok=True)
    lab.power_socket.unlink(missing_ok=True)
    with open(lab.dir / "power.log", "ab") as log:
        proc = subprocess.Popen(
            [str(VENV / "bin/python"), str(REPO / "lab/rolestack_power.py"), "serve", str(lab.power_socket), lab.name],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**CLEAN_ENV},
        )  # fmt: skip
    lab.state["power_pid"] = proc.pid
    lab.save()
    wait_for(lab.power_socket.exists, 20, "the lab's power switch")


def is_lab_power_switch(lab, pid):
    """True when pid is this lab's power switch: rolestack_power.py serve <this lab's socket> <this lab>."""
    argv = _argv(pid)
    return (
        len(argv) == 5
        and os.path.basename(argv[0]).startswith("python")
        and os.path.basename(argv[1]) == "rolestack_power.py"
        and argv[2:] == ["serve", str(lab.power_socket), lab.name]
    )


def stop_power_switch(lab):
    pid = lab.state.get("power_pid")
    if pid and _alive(pid) and is_lab_power_switch(lab, pid):
        os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(LabError):
            wait_for(lambda: not _alive(pid), 10, "the power switch to stop")


def wait_for(predicate, timeout, what, interval=0.5):
    """rolestack_highstate.wait_for, failing with a LabError (what the lab's callers catch)."""
    rolestack_highstate.wait_for(predicate, timeout, what, interval, error=LabError)


# ---------------------------------------------------------------------------------------------------- enrollment


def admit_minion(lab, host, fingerprint):
    return salt_run(lab, "--out=json", "minion_key.admit", host, fingerprint, "timeout=120", timeout=180)


def admit_minions(lab, hosts):
    """
    Each host's key admitted by the fingerprint read on the host itself (what an operator reads on a new VM's
    console): salt-run minion_key.admit <id> <fingerprint>, docs/procedures.md. Nothing is accepted by rule.
    """
    with ThreadPoolExecutor(max_workers=3) as pool:
        fingers = dict(zip(hosts, pool.map(lambda host: fingerprint_on_host(lab, host), hosts), strict=True))
        # one salt-run per key, three at a time (each waits for its key to be pending; they touch different keys)
        list(pool.map(lambda host: admit_minion(lab, host, fingers[host]), hosts))
    for host in hosts:
        lab.hosts[host]["fingerprint"] = fingers[host]
    lab.save()
    return fingers


# ---------------------------------------------------------------------------------------------------- containers


def container_pid1(lab, host):
    """PID of the container's init (the child of its systemd-nspawn), or None."""
    nspawn = lab.hosts.get(host, {}).get("nspawn_pid")
    if not nspawn or not _alive(nspawn):
        return None
    try:
        children = (PROC / str(nspawn) / "task" / str(nspawn) / "children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def in_host(lab, host, *cmd, check=True, timeout=None, input=None):
    pid = container_pid1(lab, host)
    if pid is None:
        raise LabError(f"host {host} is not running")
    return run(["nsenter", "-t", pid, "-a", *cmd], check=check, env={**CLEAN_ENV}, timeout=timeout, input=input)


def prepare_host(lab, host):
    """A fresh overlay over the base with the host's minion configuration; the salt host's stays bare (no salt
    configuration: bootstrap/master.sh writes it, inside the container)."""
    hdir = lab.host_dir(host)
    for sub in ("upper", "work", "merged"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    merged = hdir / "merged"
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={CACHE / 'base'},upperdir={hdir / 'upper'},workdir={hdir / 'work'}", merged])  # fmt: skip
    # where Debian's salt packages put salt-call, which the roles' timers run (rolestack_systemd.SALT_CALL)
    salt_call = merged / "usr/bin/salt-call"
    if not salt_call.is_symlink():
        salt_call.symlink_to(VENV / "bin/salt-call")
    if host == lab.salt_host:
        return
    minion_d = merged / "etc/salt/minion.d"
    minion_d.mkdir(parents=True, exist_ok=True)
    (minion_d / "lab.conf").write_text(
        json.dumps(
            {
                "id": host,
                "master": lab.hosts[lab.salt_host]["address"],
                # a key is pending until the operator admits it by its fingerprint: keep asking, quickly
                "rejected_retry": True,
                "acceptance_wait_time": 2,
                "acceptance_wait_time_max": 4,
                "log_level_logfile": "info",
            },
            indent=1,
        )
    )
    unit = merged / "etc/systemd/system/salt-minion.service"
    unit.write_text(
        "[Unit]\nDescription=Salt minion (the repository's venv, bind-mounted read-only)\n"
        "After=network.target\n\n[Service]\n"
        f"ExecStart={VENV}/bin/salt-minion\nKillMode=process\nRestart=always\nRestartSec=2\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    wants = merged / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "salt-minion.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/salt-minion.service")


def boot_host(lab, host):
    hdir = lab.host_dir(host)
    cmd = [
        "systemd-nspawn", "-b", "-q", "-D", hdir / "merged", "--register=no", "--keep-unit", "--console=passive",
        "-M", lab.machine(host), f"--hostname={host}", f"--network-namespace-path=/run/netns/{lab.netns(host)}",
        f"--bind-ro={PYTHON_HOME}", f"--bind-ro={VENV}", f"--bind-ro={CACHE / 'repo'}:/srv/repo",
        "--resolv-conf=off", "--timezone=off", "--link-journal=no",
        # the host firewall (nftables) of the key-value roles: the network namespace is the host's own, made by the
        # lab, so CAP_NET_ADMIN inside it reaches nothing of the machine's
        "--capability=CAP_NET_ADMIN",
    ]  # fmt: skip
    if "backup" in lab.hosts[host]["roles"]:
        # the backup VM's data disk for /srv (snapshots, the NFS export): ganesha's VFS exports a directory by its
        # file handles, which the overlay root cannot give ("Operation not supported"); a VM's disk can. And
        # open_by_handle_at, which nspawn's seccomp filter refuses (EPERM) to containers: a VM has no such filter
        disk = hdir / "srv-disk"
        disk.mkdir(exist_ok=True)
        cmd += [f"--bind={disk}:/srv", "--system-call-filter=open_by_handle_at"]
    if host == lab.salt_host:
        # the checkout where an operator clones it (read-only, not its submounts: other hosts' overlays under
        # lab/run), and the lab's share: the pillar clone, the states snapshot, the power switch's socket
        cmd += [f"--bind-ro={REPO}:{SRC_IN_HOST}:norbind", f"--bind={lab.share}:{SHARE_IN_HOST}"]
    with open(hdir / "console.log", "ab") as log:
        proc = subprocess.Popen(
            [str(part) for part in cmd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**CLEAN_ENV},
        )
    lab.hosts[host]["nspawn_pid"] = proc.pid
    lab.save()


def wait_booted(lab, host, timeout=120):
    """
    The host's boot finished with every unit up. A unit that failed to start at boot is started once more: on a
    busy machine systemd in a container sometimes fails to set up a unit's cgroup (status 219/CGROUP), and a
    systemd-user-sessions.service failed so leaves /run/nologin in place, which refuses every login but root's.
    Raises LabError naming the units that fail again.
    """
    wait_for(lambda: container_pid1(lab, host) is not None, 30, f"{host}'s init")
    seen = []

    def booted():
        seen.append(in_host(lab, host, "systemctl", "is-system-running", check=False).stdout.strip())
        return seen[-1] in ("running", "degraded")

    wait_for(booted, timeout, lambda: f"{host} to finish booting (systemctl is-system-running: {seen[-1]})")
    if seen[-1] == "degraded":
        failed = failed_units(lab, host)
        say(f"    {host}: units failed at boot, started again: {', '.join(failed) or '(none listed)'}")
        in_host(lab, host, "systemctl", "reset-failed", check=False)
        if failed:
            in_host(lab, host, "systemctl", "start", "--", *failed, check=False, timeout=120)
        still = failed_units(lab, host)
        if still:
            raise LabError(f"{host}: units failed at boot and again when started: {', '.join(still)}")
        return "running"
    return seen[-1]


def failed_units(lab, host):
    """The names of the host's failed units (systemctl list-units --failed)."""
    proc = in_host(lab, host, "systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager",
                   check=False)  # fmt: skip
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def stop_host(lab, host, timeout=20):
    """Orderly poweroff (SIGTERM to nspawn), SIGKILL of the container's PID 1 after `timeout`; each PID is signalled
    only while it is this host's (is_lab_nspawn, in_lab_netns)."""
    nspawn = lab.hosts.get(host, {}).get("nspawn_pid")
    if nspawn and _alive(nspawn) and is_lab_nspawn(lab, host, nspawn):
        pid1 = container_pid1(lab, host)
        os.kill(nspawn, signal.SIGTERM)
        if not rolestack_highstate.poll(lambda: not _alive(nspawn), timeout, interval=0.2):
            if pid1 and in_lab_netns(pid1, _netns_inodes(lab, [host])):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid1, signal.SIGKILL)
            if is_lab_nspawn(lab, host, nspawn):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(nspawn, signal.SIGKILL)
            wait_for(lambda: not _alive(nspawn), 10, f"{host}'s nspawn to exit")
    merged = lab.host_dir(host) / "merged"
    if os.path.ismount(merged):
        run(["umount", merged])
    lab.hosts.get(host, {}).pop("nspawn_pid", None)


def _cmdline(pid):
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _argv(pid):
    """A process's command line as words (salt's daemons rewrite theirs into one string: split on spaces too)."""
    return _cmdline(pid).split()


def _has_option(argv, option, value):
    return any(argv[index : index + 2] == [option, value] for index in range(len(argv) - 1))


def _ns_inode(pid, kind="net"):
    try:
        return os.stat(PROC / str(pid) / "ns" / kind).st_ino
    except OSError:
        return None


def _netns_inodes_of(names):
    """The inodes of these named network namespaces (those that exist)."""
    inodes = set()
    for name in names:
        with contextlib.suppress(OSError):
            inodes.add(os.stat(NETNS_DIR / name).st_ino)
    return inodes


def _netns_inodes(lab, hosts):
    return _netns_inodes_of([lab.netns(host) for host in hosts if host])


def in_lab_netns(pid, inodes):
    """True when the process lives in one of these network namespaces (the lab's: checked, never assumed)."""
    inode = _ns_inode(pid)
    return inode is not None and inode in inodes


def is_lab_nspawn(lab, host, pid):
    """
    True when pid is the systemd-nspawn of this lab's host: its command line boots the host's overlay as the
    host's machine, and its child (the container's init), once there, lives in the host's lab network namespace.
    """
    argv = _argv(pid)
    if not argv or os.path.basename(argv[0]) != "systemd-nspawn":
        return False
    if not (_has_option(argv, "-D", str(lab.host_dir(host) / "merged")) and _has_option(argv, "-M", lab.machine(host))):
        return False
    try:
        children = (PROC / str(pid) / "task" / str(pid) / "children").read_text().split()
    except OSError:
        children = []
    return not children or in_lab_netns(int(children[0]), _netns_inodes(lab, [host]))


def _alive(pid):
    """True while `pid` runs (a zombie child of ours is reaped, and counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def minion_answers(lab, hosts):
    proc = salt_cmd(lab, "--out=json", "--static", "-t", "5", "-L", ",".join(hosts), "test.ping", check=False)
    try:
        answered = json.loads(proc.stdout or "{}")
    except ValueError:
        return set()
    return {host for host, ret in answered.items() if ret is True}


def wait_minions(lab, hosts, timeout=180):
    missing = set(hosts)

    def answered():
        missing.difference_update(minion_answers(lab, sorted(missing)))
        return not missing

    wait_for(answered, timeout, lambda: f"every minion to answer (silent: {sorted(missing)})", interval=1)


# ---------------------------------------------------------------------------------------------------- highstate


def summarize(returns, hosts):
    """Per host (rolestack_highstate.summarize): states, ok, changed, failed, state time; and whether the run is clean."""
    rows, clean = [], True
    for host, summary in rolestack_highstate.summarize_all(returns, hosts).items():
        if "error" in summary:
            rows.append({"host": host, "error": summary["error"][:500]})
            clean = False
            continue
        rows.append(
            {
                "host": host,
                "states": summary["states"],
                "ok": summary["ok"],
                "changed": len(summary["changed"]),
                "failed": len(summary["failed"]),
                "failed_ids": [sid for sid, _ in summary["failed"]],
                "seconds": summary["seconds"],
            }
        )
        clean = clean and not summary["failed"]
    return rows, clean


def print_summary(rows, wall):
    say(f"    {'host':<18}{'states':>7}{'ok':>5}{'changed':>9}{'failed':>8}{'time s':>9}")
    for row in rows:
        if "error" in row:
            say(f"    {row['host']:<18} ERROR: {row['error']}")
            continue
        say(
            f"    {row['host']:<18}{row['states']:>7}{row['ok']:>5}{row['changed']:>9}{row['failed']:>8}"
            f"{row['seconds']:>9.2f}"
        )
        for sid in row["failed_ids"]:
            say(f"        failed: {sid}")
    say(f"    highstate wall time: {wall:.1f} s")


# A new platform converges in this order: the salt host (DNS, the CA), then masterdb (replicas copy it), then
# the rest, then the salt host once more (known_hosts from the keys the others published). Later highstates need
# no order.
WAVES = (
    ("the salt host", "I@rolestack:host:roles:salt"),
    ("masterdb", "I@rolestack:host:roles:masterdb and not I@rolestack:host:roles:salt"),
    ("every other host", "not I@rolestack:host:roles:salt and not I@rolestack:host:roles:masterdb"),
    # the jump box's known_hosts holds the host keys every host published in its first highstate (mine)
    ("the salt host again (known_hosts)", "I@rolestack:host:roles:salt"),
)


def mine_address_hosts(lab):
    """The hosts the lab's inventory gives no address: the platform learns theirs from the mine (their first run)."""
    return rolestack_inventory.missing_addresses(
        rolestack_inventory.load_yaml((lab.pillar_repo / "inventory.yaml").read_text())
    )


def wave_steps(lab):
    """
    WAVES as salt targets; the hosts whose address comes from the mine run first in the wave of every other host
    (and again in it): a host that guards a port for one of them (a key-value firewall for a web host), or names one
    in /etc/hosts, then has its address, and the fleet's next highstate changes nothing.
    """
    steps = [(f"{name}: {compound}", ["-C", compound]) for name, compound in WAVES]
    learned = mine_address_hosts(lab)
    if learned:
        at = next(index for index, (name, _) in enumerate(WAVES) if name == "every other host")
        steps.insert(at, (f"the hosts the mine gives an address: {', '.join(learned)}", ["-L", ",".join(learned)]))
    return steps


def highstate(lab, target="*", extra=(), waves=False):
    start = time.monotonic()
    returns = {}
    steps = wave_steps(lab) if waves else [(None, [target])]
    if waves:
        # pillar targeting (-C I@...) matches the master's cached pillar: make sure every minion's is there
        salt_cmd(lab, "--out=json", "-t", "120", "*", "saltutil.refresh_pillar", "wait=True", check=False)
    for title, selector in steps:
        if title:
            say(f"    highstate of {title}")
        cmd = ["--out=json", "--static", "-t", "900", *selector, "state.highstate", *extra]
        proc = salt_cmd(lab, *cmd, check=False)
        if waves and "No minions matched the target" in proc.stdout + proc.stderr:
            continue
        try:
            returns.update(json.loads(proc.stdout or "{}"))
        except ValueError as err:
            raise LabError(f"highstate output is not JSON: {proc.stdout[-2000:]} {proc.stderr[-2000:]}") from err
    wall = time.monotonic() - start
    hosts = sorted(lab.hosts) if target == "*" else [target]
    rows, clean = summarize(returns, hosts)
    return {"returns": returns, "rows": rows, "clean": clean, "wall": wall}


# ---------------------------------------------------------------------------------------------------- commands


def cmd_up(lab, profile):
    if lab.state.get("hosts") and any(container_pid1(lab, h) for h in lab.hosts):
        raise LabError(f"lab {lab.name} is already up (make lab-down first)")
    if lab_namespaces(lab):
        say(f"==> leftovers of lab {lab.name} found: removing them first")
        cmd_down(lab, quiet=True)
    total = time.monotonic()
    with step("set-up: base root filesystem and local apt repository"):
        build_base()
    inventory, hosts, salt_host, network = lab.plan(profile)
    if lab.dir.exists():
        shutil.rmtree(lab.dir)
    lab.state = {
        "profile": profile,
        "hosts": hosts,
        "salt_host": salt_host,
        "network": str(network),
    }
    lab.save()
    with step(f"network: bridge in {lab.switch}, {len(hosts)} host namespaces in {network}"):
        create_network(lab, hosts, network)
    with step(f"pillar and states: git repositories under lab/run/{lab.name}/share; the lab's power switch"):
        init_pillar_repo(lab, inventory)
        snapshot_states(lab)
        start_power_switch(lab)
    with step(f"boot {len(hosts)} containers (overlay over the base; {salt_host} bare, the others' salt-minion "
              "as a systemd unit)"):  # fmt: skip
        for host in hosts:
            prepare_host(lab, host)
            boot_host(lab, host)
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(pool.map(lambda h: wait_booted(lab, h), hosts))
    with step(f"bootstrap/master.sh in {salt_host} ({hosts[salt_host]['address']}): the master, its minion, /srv in "
              "git, the salt role"):  # fmt: skip
        start_master(lab)
    others = [host for host in hosts if host != salt_host]
    with step("every other minion admitted by its fingerprint (minion_key.admit); every minion answers"):
        admit_minions(lab, others)
        wait_minions(lab, hosts)
    with step("first highstate, in waves (salt host, masterdb, the rest)"):
        result = highstate(lab, waves=True)
        print_summary(result["rows"], result["wall"])
    (lab.dir / "first-highstate.json").write_text(json.dumps(result, indent=1))
    elapsed = time.monotonic() - total
    say(f"==> lab {lab.name} ({profile}) up in {elapsed:.1f} s")
    say(f"    reach it: make lab-shell HOST={salt_host}   make lab-salt ARGS=\"'*' test.ping\"   make lab-down")
    if not result["clean"]:
        raise LabError("some hosts failed their highstate (see above)")
    return result


def cmd_down(lab, quiet=False):
    start = time.monotonic()
    hosts = list(lab.hosts)
    if hosts:
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(pool.map(lambda h: stop_host(lab, h), hosts))
    stop_power_switch(lab)
    # anything still living in a lab namespace (strays) goes by PID, each checked to be in it
    for ns in lab_namespaces(lab):
        inode = _netns_inodes_of([ns])
        for stray in run(["ip", "netns", "pids", ns], check=False).stdout.split():
            if stray.isdigit() and in_lab_netns(int(stray), inode):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(stray), signal.SIGKILL)
    for mount in lab_mounts(lab):
        run(["umount", "-l", mount], check=False)
    for ns in lab_namespaces(lab):
        run(["ip", "netns", "del", ns])
    if lab.dir.exists():
        shutil.rmtree(lab.dir)
    lab.state = {}
    if not quiet:
        say(f"==> lab {lab.name} down in {time.monotonic() - start:.1f} s")


def lab_mounts(lab):
    """Mount points the lab made (overlays under its run dir), deepest first."""
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(str(lab.dir) + "/") or f"/nspawn/propagate/rs-{lab.name}-" in point:
                found.append(point)
    return sorted(found, key=len, reverse=True)


def lab_netns_inodes(lab):
    return _netns_inodes_of(lab_namespaces(lab))


def lab_processes(lab, netns_inodes=None):
    """PIDs of the lab's processes: in one of its network namespaces, one of its hosts' systemd-nspawn, or its power
    switch."""
    inodes = lab_netns_inodes(lab) | set(netns_inodes or ())
    found = []
    for proc in PROC.iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        pid = int(proc.name)
        if (
            in_lab_netns(pid, inodes)
            or any(is_lab_nspawn(lab, host, pid) for host in lab.hosts)
            or is_lab_power_switch(lab, pid)
        ):
            found.append(pid)
    return found


def fingerprint_on_host(lab, host, timeout=60):
    """The new minion's key fingerprint, read on the host itself (what an operator does on a new VM)."""
    pub = lab.host_dir(host) / "merged/etc/salt/pki/minion/minion.pub"
    wait_for(pub.exists, timeout, f"{host}'s minion key")
    proc = in_host(lab, host, VENV / "bin/salt-call", "--local", "--out=json", "key.finger")
    return json.loads(proc.stdout)["local"]


def cmd_replace(lab, host):
    if host not in lab.hosts:
        raise LabError(f"unknown host {host!r}; lab hosts: {', '.join(sorted(lab.hosts))}")
    if host == lab.salt_host:
        raise LabError(f"{host} is the master: rebuild it with master_rebuild (bench/lab), not replace")
    start = time.monotonic()
    timings = {}
    with step(f"destroy {host}: stop its container, remove its overlay"):
        stop_host(lab, host)
        shutil.rmtree(lab.host_dir(host))
        lab.save()
    timings["destroy"] = time.monotonic() - start
    with step(f"boot a fresh {host} (new minion key, same id)"):
        prepare_host(lab, host)
        boot_host(lab, host)
        wait_booted(lab, host)
        finger = fingerprint_on_host(lab, host)
        say(f"    new key fingerprint: {finger}")
    with step(f"on the master: salt-run minion_key.replace {host} fingerprint=<new>"):
        proc = salt_run(lab, "--out=json", "minion_key.replace", host, f"fingerprint={finger}", "timeout=60")
        say("    " + " ".join(proc.stdout.split())[:300])
        lab.hosts[host]["fingerprint"] = finger
        lab.save()
    with step(f"on {host}: salt-call state.highstate"):
        hs_start = time.monotonic()
        proc = in_host(lab, host, VENV / "bin/salt-call", "--out=json", "state.highstate", check=False, timeout=900)
        timings["highstate"] = time.monotonic() - hs_start
        try:
            returns = {host: json.loads(proc.stdout)["local"]}
        except (ValueError, KeyError) as err:
            raise LabError(f"salt-call state.highstate on {host}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}") from err
        rows, clean = summarize(returns, [host])
        print_summary(rows, timings["highstate"])
    elapsed = time.monotonic() - start
    timings["total"] = elapsed
    say(f"==> {host} back in its role {elapsed:.1f} s after its container was destroyed")
    if not clean:
        raise LabError(f"{host}'s highstate failed after replacement")
    return {"rows": rows, "returns": returns, "timings": timings, "fingerprint": finger}


# what docs/procedures.md, "Rebuild the master", keeps off the master: its keys (and the accepted minions' keys),
# the CA, the salt host's SSH host keys (every host's known_hosts holds them), and the git repositories
MASTER_BACKUP_PATHS = ["etc/salt/pki/master", "etc/pki/rolestack", "etc/ssh/ssh_host_*"]


def backup_master(lab):
    """The master's backup, made inside the salt host into lab/run/LAB/share/master-backup (keys.tar, *.git)."""
    backup = f"{SHARE_IN_HOST}/master-backup"
    script = f"""
        rm -rf {backup}; mkdir -m 0700 {backup}
        tar -C / -cpf {backup}/keys.tar {" ".join(MASTER_BACKUP_PATHS)}
        for repo in pillar states; do git clone -q --mirror /srv/git/$repo.git {backup}/$repo.git; done
    """
    in_host(lab, lab.salt_host, "sh", "-euc", script, timeout=300)
    return backup


def resend_mine(lab):
    """
    Every minion sends its mine functions (rolestack:mine_functions of its pillar) again: a rebuilt master's mine
    is empty, and `mine.update` sends nothing from a minion daemon started before the base role wrote its
    mine_functions (they are read at the daemon's start). The pillar is read on the master (salt-run
    pillar.show_pillar): the minions' `pillar.get` output masks values in salt 3008 (a cidr of "**********" made
    frontend1 send no address, and the fleet's highstate then dropped it from four firewalls).
    """

    def functions(host):
        proc = salt_run(lab, "--out=json", "pillar.show_pillar", host, check=False)
        pillar = (json_documents(proc.stdout) or [{}])[0]
        return host, ((pillar.get("rolestack") or {}).get("mine_functions") or {}) if isinstance(pillar, dict) else {}

    calls = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for host, found in pool.map(functions, sorted(lab.hosts)):
            for function, arguments in found.items():
                words = tuple(f"{key}={json.dumps(value)}" for argument in arguments for key, value in argument.items())
                calls.setdefault((function, words), []).append(host)
    for (function, words), hosts in sorted(calls.items()):
        salt_cmd(lab, "--out=json", "-t", "60", "-L", ",".join(sorted(hosts)), "mine.send", function, *words,
                 check=False)  # fmt: skip


def master_rebuild(lab):
    """
    The salt host rebuilt as docs/procedures.md says, from a bare container: its backup made (not timed), its
    container destroyed; then (timed) a fresh bare container, the keys and CA restored, bootstrap/master.sh from
    the backed-up repositories, every existing minion answering (their keys were in the backup), the salt host's
    own highstate, and a highstate of the fleet, which should change nothing. Returns {"seconds", "steps",
    "highstate"} (the fleet highstate's result).
    """
    salt = lab.salt_host
    backup = backup_master(lab)
    stop_host(lab, salt)
    shutil.rmtree(lab.host_dir(salt))
    lab.save()
    start = last = time.monotonic()
    steps = {}

    def done(name):
        nonlocal last
        now = time.monotonic()
        steps[name], last = now - last, now

    prepare_host(lab, salt)
    boot_host(lab, salt)
    wait_booted(lab, salt)
    done("boot")
    in_host(lab, salt, "tar", "-C", "/", "-xpf", f"{backup}/keys.tar")
    write_lab_master_conf(lab)
    proc = bootstrap_master(lab, pillar=f"{backup}/pillar.git", states=f"{backup}/states.git")
    if proc.returncode != 0:
        raise LabError(f"bootstrap/master.sh of the rebuilt master failed ({proc.returncode}):\n"
                       f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")  # fmt: skip
    wait_master(lab)
    done("bootstrap")
    wait_minions(lab, sorted(lab.hosts))
    done("minions")
    # the new master's caches are empty: every minion's pillar and mine (host keys for known_hosts) first
    salt_cmd(lab, "--out=json", "-t", "120", "*", "saltutil.refresh_pillar", "wait=True", check=False)
    resend_mine(lab)
    own = highstate(lab, target=salt)
    if not own["clean"]:
        raise LabError(f"the rebuilt {salt}'s highstate failed: {own['rows']}")
    done("salt_highstate")
    result = highstate(lab)
    done("fleet_highstate")
    return {"seconds": time.monotonic() - start, "steps": steps, "highstate": result}


def cmd_fence(lab, host):
    """Power a host off at once (its container's PID 1 killed if it does not stop within 1 s); fails unless it is off."""
    if host not in lab.hosts:
        raise LabError(f"unknown host {host!r}; lab hosts: {', '.join(sorted(lab.hosts))}")
    try:
        stop_host(lab, host, timeout=1)
    except LabError as err:
        # e.g. its overlay still mounted in the master's mount namespace: what matters is that the host is off
        say(f"    {host}: {err}")
    finally:
        lab.save()
    if container_pid1(lab, host):
        raise LabError(f"{host} still runs")
    say(f"==> {host} is off")


def cmd_shell(lab, host, command):
    pid = container_pid1(lab, host)
    if pid is None:
        raise LabError(f"host {host} is not running in lab {lab.name}")
    argv = ["nsenter", "-t", str(pid), "-a", *(command or ["/bin/bash", "-l"])]
    os.execvpe("nsenter", argv, {**CLEAN_ENV, "TERM": os.environ.get("TERM", "xterm")})


def cmd_status(lab):
    if not lab.hosts:
        say(f"lab {lab.name}: not up")
        return
    say(f"lab {lab.name} ({lab.state['profile']}), network {lab.state['network']}")
    for host, info in sorted(lab.hosts.items()):
        pid = container_pid1(lab, host)
        say(f"  {host:<18}{info['address']:<16}{f'up (pid {pid})' if pid else 'down':<16}{','.join(info['roles'])}")


def require_root():
    if os.geteuid() != 0:
        raise LabError("the lab needs root (namespaces, mounts, systemd-nspawn)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=os.environ.get("LAB", "lab"), help="lab name (several labs can coexist)")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up")
    up.add_argument("--profile", choices=sorted(PROFILES), default="full")
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("highstate")
    replace = sub.add_parser("replace")
    replace.add_argument("host")
    fence = sub.add_parser("fence")
    fence.add_argument("host")
    shell = sub.add_parser("shell")
    shell.add_argument("host")
    shell.add_argument("command", nargs=argparse.REMAINDER, help="a command to run instead of a login shell")
    sub.add_parser("push-pillar")
    sub.add_parser("push-states")
    salt = sub.add_parser("salt")
    salt.add_argument("args", nargs=argparse.REMAINDER)
    args, unknown = parser.parse_known_args(argv)
    if args.action == "salt":  # salt's own options (-t 600, -C ...) pass through
        args.args = unknown + args.args
    elif args.action == "shell":
        args.command = unknown + args.command
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        require_root()
        lab = Lab(args.name)
        if args.action == "up":
            cmd_up(lab, args.profile)
        elif args.action == "down":
            cmd_down(lab)
        elif args.action == "status":
            cmd_status(lab)
        elif args.action == "highstate":
            result = highstate(lab)
            print_summary(result["rows"], result["wall"])
            return 0 if result["clean"] else 1
        elif args.action == "replace":
            cmd_replace(lab, args.host)
        elif args.action == "fence":
            cmd_fence(lab, args.host)
        elif args.action == "shell":
            cmd_shell(lab, args.host, args.command)
        elif args.action == "push-pillar":
            proc = push_pillar(lab)
            sys.stdout.write(proc.stdout + proc.stderr)
            return proc.returncode
        elif args.action == "push-states":
            say(f"==> serving {push_states(lab)}")
        elif args.action == "salt":
            if not lab.hosts:
                raise LabError(f"lab {args.name} is not up")
            cmd_shell(lab, lab.salt_host, [str(VENV / "bin/salt"), *args.args])
    except LabError as err:
        say(f"lab: error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
