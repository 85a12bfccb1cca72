"""
The salt role's DNS part: gdnsd on the salt host serves the internal zone from rolestack:dns_zone.

Never touches this machine's /etc, /usr/local or port 53:
- the role is dry-run (test=True) with the pillar the ext_pillar derives;
- the files the SLS writes (their text from the pillar, rolestack:dns_zone) go into a directory under tmp_path,
  the configuration made again by rolestack_dns.config_text with 127.0.0.1, a free port and a private run/state
  dir; a real gdnsd is started there in the foreground, queried with dnspython and stopped by its PID;
- the role is applied for real (twice, then after an inventory change) inside private mount and network
  namespaces whose /etc and /usr/local/sbin are overlays writing under tmp_path.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.zone
import pytest
import rolestack_dns
import yaml

from tests.support.paths import LOADER_DIRS
from tests.support.paths import REPO
from tests.support.paths import STATES
from tests.support.services import wait_for

ZONE = "production.wpdn"
REVERSE = "10.10.10.in-addr.arpa"
CHECKER = STATES / "salt" / "files" / "rolestack-gdnsd-check.sh"
NAMESERVER = f"salt.{ZONE}"
STATE_IDS = [
    "salt-dns-pkg",
    "salt-dns-checker",
    "salt-dns-config",
    "salt-dns-zone",
    "salt-dns-reverse-zone",
    "salt-dns-zones-dir",
    "salt-dns-service",
    "salt-dns-reload-zones",
]

needs_gdnsd = pytest.mark.skipif(not shutil.which("gdnsd"), reason="gdnsd is not installed (make test installs it)")


def _arg(high, state_id, key):
    """One argument the SLS gives one file.managed state (``contents``, ``name``, ``check_cmd``)."""
    return next(arg[key] for arg in high[state_id]["file"] if isinstance(arg, dict) and key in arg)


def _private_config(port, tmp_path):
    """gdnsd's configuration as the pillar's, listening on 127.0.0.1:port with a private run and state dir."""
    return rolestack_dns.config_text(
        ZONE, ["127.0.0.1"], port, run_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state")
    )


def _serial(zone_text):
    zone = dns.zone.from_text(zone_text, origin=ZONE, relativize=True)
    return zone.get_rdataset("@", "SOA")[0].serial


def _free_dns_port():
    """A port free on 127.0.0.1 for both UDP and TCP (gdnsd listens on both)."""
    for _ in range(50):
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port for both UDP and TCP on 127.0.0.1")


def _query(port, name, rdtype="A", timeout=2.0):
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=timeout)


def _addresses(response):
    return sorted(item.address for rrset in response.answer for item in rrset if rrset.rdtype == dns.rdatatype.A)


@pytest.fixture
def salt_host(make_loaders):
    """The SLS's high data for minion `salt` and its pillar rolestack:dns_zone (the records behind the files)."""
    loaders = make_loaders("salt")
    high = loaders.modules.state.show_sls("salt")
    assert isinstance(high, dict), high
    return loaders.pillar["rolestack"]["dns_zone"], high


@pytest.fixture
def private_gdnsd(tmp_path):
    """start(config_text, {zone: text}) -> a real gdnsd in the foreground under tmp_path, stopped by PID."""
    started = []

    def start(config_text, zones):
        conf = tmp_path / "gdnsd"
        (conf / "zones").mkdir(parents=True)
        (conf / "config").write_text(config_text)
        for name, text in zones.items():
            (conf / "zones" / name).write_text(text)
        check = subprocess.run(["gdnsd", "-c", str(conf), "checkconf"], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        log = tmp_path / "gdnsd.log"
        with open(log, "ab") as handle:
            process = subprocess.Popen(
                ["gdnsd", "-c", str(conf), "start"], stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        started.append(process)
        port = int(re.search(r"dns_port => (\d+)", config_text).group(1))

        def answering():
            if process.poll() is not None:
                raise RuntimeError(f"gdnsd exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                _query(port, f"{ZONE}.", "SOA", timeout=0.2)
            except dns.exception.Timeout:
                return False
            return True

        wait_for(answering, 30, f"gdnsd on 127.0.0.1:{port}")
        process.conf, process.port, process.log = conf, port, log
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_salt_role_dry_run(make_loaders):
    ret = make_loaders("salt").modules.state.sls("salt", test=True)
    assert not ret.failed, ret.raw
    assert "Traceback" not in str(ret.raw)
    by_id = {state.id: state for state in ret}
    assert set(STATE_IDS) <= set(by_id), sorted(by_id)
    for state in ret:
        assert state.result is not False, state
    # this machine has no /etc/gdnsd/config: the dry run says it would be created (and nothing was)
    assert by_id["salt-dns-config"].result in (None, True)


def test_sls_writes_the_files_the_pillar_derives(salt_host):
    dns_zone, high = salt_host
    config = _arg(high, "salt-dns-config", "contents")
    assert config == rolestack_dns.config_text(ZONE, ["10.10.10.2", "127.0.0.1"])
    assert re.search(r"listen => \[\s+10\.10\.10\.2,\s+127\.0\.0\.1,\s+\]", config), config
    assert "dns_port => 53" in config and "run_dir" not in config
    assert {"name": "db2", "type": "A", "data": "10.10.10.12"} in dns_zone["records"]
    zone = _arg(high, "salt-dns-zone", "contents")
    assert zone == rolestack_dns.zone_text(ZONE, NAMESERVER, dns_zone["records"])
    assert "\ndb2                              A     10.10.10.12\n" in zone
    reverse = dns_zone["reverse"]
    assert _arg(high, "salt-dns-reverse-zone", "contents") == rolestack_dns.zone_text(
        REVERSE, NAMESERVER, reverse["records"], ZONE
    )
    assert _arg(high, "salt-dns-zone", "name") == f"/etc/gdnsd/zones/{ZONE}"
    # the candidate files are checked by gdnsd before they replace the live ones
    for state_id, relpath in (("salt-dns-config", "config"), ("salt-dns-zone", f"zones/{ZONE}")):
        check = _arg(high, state_id, "check_cmd")
        assert check == f"/usr/local/sbin/rolestack-gdnsd-check -c /etc/gdnsd {relpath}"


@needs_gdnsd
def test_rendered_zone_is_served_by_a_real_gdnsd(salt_host, private_gdnsd, tmp_path):
    dns_zone, high = salt_host
    port = _free_dns_port()
    config = _private_config(port, tmp_path)
    zone_text = _arg(high, "salt-dns-zone", "contents")

    server = private_gdnsd(config, {ZONE: zone_text})

    assert _addresses(_query(port, f"db2.{ZONE}.")) == ["10.10.10.12"]
    assert _addresses(_query(port, f"masterdb.{ZONE}.")) == ["10.10.10.11"]
    assert _addresses(_query(port, f"salt.{ZONE}.")) == ["10.10.10.2"]
    unknown = _query(port, f"no-such-host.{ZONE}.")
    assert unknown.rcode() == dns.rcode.NXDOMAIN and not unknown.answer
    # authoritative only: a name outside the zone is refused, not resolved
    assert _query(port, "deb.debian.org.").rcode() == dns.rcode.REFUSED
    ns = _query(port, f"{ZONE}.", "NS")
    assert [item.target.to_text() for rrset in ns.answer for item in rrset] == [f"salt.{ZONE}."]
    soa = _query(port, f"{ZONE}.", "SOA")
    assert soa.answer[0][0].serial == _serial(zone_text)

    # what salt-dns-reload-zones does after a zone change: the daemon answers with the new data
    records = [dict(r) for r in dns_zone["records"]]
    for record in records:
        if record["name"] == "db2":
            record["data"] = "10.10.10.13"
    new_zone = rolestack_dns.zone_text(ZONE, NAMESERVER, records)
    (server.conf / "zones" / ZONE).write_text(new_zone)
    reload = subprocess.run(
        ["gdnsdctl", "-c", str(server.conf), "reload-zones"], capture_output=True, text=True, timeout=60
    )
    assert reload.returncode == 0, reload.stderr
    assert _addresses(_query(port, f"db2.{ZONE}.")) == ["10.10.10.13"]
    assert _query(port, f"{ZONE}.", "SOA").answer[0][0].serial == _serial(new_zone) != _serial(zone_text)


def test_serial_follows_the_records_only(salt_host):
    dns_zone, _ = salt_host
    records = dns_zone["records"]

    def zone(recs):
        return rolestack_dns.zone_text(ZONE, NAMESERVER, recs)

    first = zone(records)
    assert zone(records) == first, "the same records must render the same zone"
    assert zone(list(reversed(records))) == first, "the order of the records must not matter"
    assert zone(records + records[:1]) == first, "a duplicated record is served once"
    serial = _serial(first)
    assert 0 < serial < 2**32

    changed = [dict(r, data="10.10.10.99") if r["name"] == "app2" else r for r in records]
    added = records + [{"name": "app3", "type": "A", "data": "10.10.10.53"}]
    removed = [r for r in records if r["name"] != "app2"]
    serials = {_serial(zone(recs)) for recs in (changed, added, removed)}
    assert serial not in serials and len(serials) == 3

    parsed = dns.zone.from_text(first, origin=ZONE, relativize=True)
    assert [r.address for r in parsed.get_rdataset("elasticsearch", "A")] == ["10.10.10.41"]


@needs_gdnsd
def test_reverse_zone_is_served_with_a_ptr_per_host(salt_host, private_gdnsd, tmp_path):
    dns_zone, high = salt_host
    assert dns_zone["reverse"]["zone"] == REVERSE
    assert _arg(high, "salt-dns-reverse-zone", "name") == f"/etc/gdnsd/zones/{REVERSE}"
    check = _arg(high, "salt-dns-reverse-zone", "check_cmd")
    assert check == f"/usr/local/sbin/rolestack-gdnsd-check -c /etc/gdnsd zones/{REVERSE}"
    port = _free_dns_port()
    config = _private_config(port, tmp_path)
    forward = _arg(high, "salt-dns-zone", "contents")
    reverse = _arg(high, "salt-dns-reverse-zone", "contents")
    private_gdnsd(config, {ZONE: forward, REVERSE: reverse})

    def ptr(address):
        response = _query(port, dns.reversename.from_address(address).to_text(), "PTR")
        return dns.rcode.to_text(response.rcode()), [
            item.target.to_text() for rrset in response.answer for item in rrset
        ]

    assert ptr("10.10.10.12") == ("NOERROR", [f"db2.{ZONE}."])
    assert ptr("10.10.10.2") == ("NOERROR", [f"salt.{ZONE}."])
    assert ptr("10.10.10.11") == ("NOERROR", [f"db1-masterdb.{ZONE}."])
    assert ptr("10.10.10.99")[0] == "NXDOMAIN"  # no host there
    assert ptr("10.10.11.12")[0] == "REFUSED"  # outside the inventory network's zone
    soa = _query(port, f"{REVERSE}.", "SOA").answer[0][0]
    assert soa.serial == dns.zone.from_text(reverse, origin=REVERSE).get_rdataset("@", "SOA")[0].serial
    assert soa.rname.to_text() == f"hostmaster.{ZONE}."


@needs_gdnsd
def test_checker_refuses_a_broken_zone_and_leaves_the_live_one(salt_host, tmp_path):
    _, high = salt_host
    conf = tmp_path / "etc-gdnsd"
    (conf / "zones").mkdir(parents=True)
    (conf / "config").write_text(_arg(high, "salt-dns-config", "contents"))
    good = _arg(high, "salt-dns-zone", "contents")
    (conf / "zones" / ZONE).write_text(good)
    candidate = tmp_path / "candidate"

    candidate.write_text(good.replace("10.10.10.12", "10.10.10.13"))
    ok = subprocess.run(
        [str(CHECKER), "-c", str(conf), f"zones/{ZONE}", str(candidate)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr

    candidate.write_text(good + "db3 A not-an-address\n")
    bad = subprocess.run(
        [str(CHECKER), "-c", str(conf), f"zones/{ZONE}", str(candidate)], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert f"gdnsd checkconf refused the new {conf}/zones/{ZONE}" in bad.stdout
    assert "parse error" in bad.stdout.lower()
    assert (conf / "zones" / ZONE).read_text() == good

    candidate.write_text("options => { listen => [ 127.0.0.1 ] dns_port => not-a-port }\n")
    bad_config = subprocess.run(
        [str(CHECKER), "-c", str(conf), "config", str(candidate)], capture_output=True, text=True
    )
    assert bad_config.returncode == 1, bad_config.stdout


def test_a_host_without_dns_zone_is_refused_clearly(make_loaders):
    ret = make_loaders("app1").modules.state.sls("salt", test=True)
    assert ret.failed
    assert "no rolestack:dns_zone pillar for app1" in str(ret.raw)


def test_nothing_is_served_while_the_salt_host_address_is_pending(make_loaders, pillar_tree):
    inventory = pillar_tree / "inventory.yaml"
    data = yaml.safe_load(inventory.read_text())
    data["hosts"]["salt"] = {}
    inventory.write_text(yaml.safe_dump(data))
    ret = make_loaders("salt").modules.state.sls("salt.dns", test=True)
    assert not ret.failed, ret.raw
    assert [state.id for state in ret] == ["salt-dns-pending"]
    assert "address of salt is pending" in str(ret.raw)


# --- the role applied for real, in a sandbox ------------------------------------------------------------------

# This machine has no systemd (the lab's hosts have: there gdnsd runs from Debian's unit, reload = gdnsdctl
# replace). Here salt's service module is debian_service, so the sandbox gets a stand-in init script.
STAND_IN_INIT = """\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          gdnsd
# Required-Start:    $network
# Required-Stop:     $network
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: test stand-in for Debian's systemd unit of gdnsd
### END INIT INFO
case "$1" in
  start)
    start-stop-daemon --start --quiet --oknodo --background --make-pidfile --pidfile {pidfile} \\
        --output {log} --exec /usr/sbin/gdnsd -- -c /etc/gdnsd start
    for i in $(seq 100); do gdnsdctl -o status >/dev/null 2>&1 && exit 0; sleep 0.1; done
    exit 1 ;;
  stop)
    start-stop-daemon --stop --quiet --oknodo --retry 10 --pidfile {pidfile} --exec /usr/sbin/gdnsd
    rm -f {pidfile} ;;
  status)
    start-stop-daemon --status --pidfile {pidfile} --exec /usr/sbin/gdnsd ;;
  reload|force-reload|restart)
    "$0" stop && "$0" start ;;
esac
"""

QUERY = """\
import json, sys
import dns.message, dns.query, dns.rcode
out = {}
for server in ("10.10.10.2", "127.0.0.1"):
    for name in ("db2", "masterdb", "no-such-host"):
        r = dns.query.udp(dns.message.make_query(f"{name}.production.wpdn.", "A"), server, port=53, timeout=3)
        out[f"{server} {name}"] = [dns.rcode.to_text(r.rcode())] + sorted(i.address for s in r.answer for i in s)
    r = dns.query.udp(dns.message.make_query("production.wpdn.", "SOA"), server, port=53, timeout=3)
    out[f"{server} serial"] = r.answer[0][0].serial
    r = dns.query.udp(dns.message.make_query("12.10.10.10.in-addr.arpa.", "PTR"), server, port=53, timeout=3)
    out[f"{server} ptr12"] = [dns.rcode.to_text(r.rcode())] + sorted(i.target.to_text() for s in r.answer for i in s)
json.dump(out, sys.stdout)
"""


@pytest.fixture
def sandbox(tmp_path, pillar_tree):
    """
    run() applies the salt role for real, twice, then again after an inventory change, in private mount,
    network and PID namespaces: /etc, /usr/local/sbin and /srv are overlays whose writes land under tmp_path, /run is a
    private tmpfs, TMPDIR a directory under tmp_path, 10.10.10.2 exists only on the namespace's loopback. gdnsd is
    stopped by its PID (pidfile of the stand-in init script) when the script exits, and cannot outlive the PID
    namespace. No tmpfs on /tmp: it would hide a checkout (and its .tmp, tmp_path included) living under /tmp.
    """
    conf, out = tmp_path / "conf", tmp_path / "out"
    for path in (conf, out):
        path.mkdir()
    dirs = "".join(f"{key}: [{value[0]}]\n" for key, value in LOADER_DIRS.items())
    (conf / "minion").write_text(
        f"id: salt\nroot_dir: {tmp_path / 'root'}\nfile_client: local\nuser: root\n"
        f"file_roots: {{base: [{STATES}]}}\npillar_roots: {{base: [{pillar_tree}]}}\n"
        "ext_pillar:\n  - rolestack: {inventory: inventory.yaml}\n" + dirs
    )
    pidfile = tmp_path / "gdnsd.pid"
    upper = {}
    for name in ("etc", "sbin", "srv"):
        upper[name] = tmp_path / f"{name}-upper"
        (tmp_path / f"{name}-work").mkdir()
    (upper["etc"] / "init.d").mkdir(parents=True)
    (upper["etc"] / "rc2.d").mkdir()
    (upper["sbin"]).mkdir()
    (upper["srv"]).mkdir()
    init = upper["etc"] / "init.d" / "gdnsd"
    init.write_text(STAND_IN_INIT.format(pidfile=pidfile, log=tmp_path / "gdnsd.log"))
    init.chmod(0o755)
    # enabled at boot already: debian_service enables with insserv, which this machine lacks
    (upper["etc"] / "rc2.d" / "S01gdnsd").symlink_to("../init.d/gdnsd")
    (tmp_path / "query.py").write_text(QUERY)
    (tmp_path / "no-systemctl").write_text("")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "runlevel").write_text("#!/bin/sh\necho unknown\nexit 1\n")
    (tmp_path / "bin" / "runlevel").chmod(0o755)
    inventory = pillar_tree / "inventory.yaml"
    # salt.dns and salt.ca: salt.rsync (packages, xinetd, directories under /srv) is tested in test_salt_rsync.py
    salt_call = f"{REPO}/.venv/bin/salt-call -c {conf} --local --out=json state.apply salt.dns,salt.ca,salt.jumpbox"
    script = f"""\
        set -e
        ip link set lo up
        ip addr add 10.10.10.2/32 dev lo
        mount -t tmpfs tmpfs /run
        export TMPDIR={tmp_path / "tmp"}
        mount -t overlay overlay -o lowerdir=/etc,upperdir={upper["etc"]},workdir={tmp_path / "etc-work"} /etc
        mount -t overlay overlay \
            -o lowerdir=/usr/local/sbin,upperdir={upper["sbin"]},workdir={tmp_path / "sbin-work"} /usr/local/sbin
        # the role's /srv in git (salt.srv)
        mount -t overlay overlay -o lowerdir=/srv,upperdir={upper["srv"]},workdir={tmp_path / "srv-work"} /srv
        # systemctl is installed here but systemd is not PID 1: salt's service states would run in "offline"
        # mode (nothing done). Hidden, salt uses debian_service and the stand-in init script; `runlevel` (a
        # link to systemctl) is replaced by one on PATH that answers like it does without an init system
        if [ -e /usr/bin/systemctl ]; then mount --bind {tmp_path / "no-systemctl"} /usr/bin/systemctl; fi
        export PATH={tmp_path / "bin"}:$PATH
        # the mounts above must leave the checkout and tmp_path in sight
        for kept in {REPO / "states"} {tmp_path / "tmp"}; do
            test -d "$kept" || {{ echo "the sandbox hides $kept" >&2; exit 1; }}
        done
        trap '/etc/init.d/gdnsd stop' EXIT
        {salt_call} > {out}/apply1.json
        {salt_call} > {out}/apply2.json
        {REPO}/.venv/bin/python {tmp_path}/query.py > {out}/query1.json
        sed -i 's/address: 10.10.10.12$/address: 10.10.10.13/' {inventory}
        {salt_call} > {out}/apply3.json
        {REPO}/.venv/bin/python {tmp_path}/query.py > {out}/query2.json
        {salt_call} > {out}/apply4.json
    """

    def run():
        return subprocess.run(
            # a PID namespace too: whatever the script leaves running dies with it (the kernel kills the rest of
            # the namespace when its first process, the script's shell, exits)
            [
                "unshare",
                "--mount",
                "--net",
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                "sh",
                "-c",
                textwrap.dedent(script),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )

    run.out, run.upper = out, upper
    return run


def _load(path):
    return json.loads(path.read_text())["local"]


@needs_gdnsd
@pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="needs root and unshare (util-linux)")
def test_salt_role_applied_for_real_converges_serves_and_follows_the_inventory(sandbox):
    live = [path for path in ("/etc/gdnsd/config", "/usr/local/sbin/rolestack-gdnsd-check") if os.path.exists(path)]
    ret = sandbox()
    assert [
        path for path in ("/etc/gdnsd/config", "/usr/local/sbin/rolestack-gdnsd-check") if os.path.exists(path)
    ] == live
    assert ret.returncode == 0, ret.stderr[-3000:]
    first, second = _load(sandbox.out / "apply1.json"), _load(sandbox.out / "apply2.json")
    assert all(state["result"] is True for state in first.values()), first
    by_id = {state["__id__"]: state for state in first.values()}
    assert by_id["salt-dns-service"]["changes"] == {"gdnsd": True}, by_id["salt-dns-service"]
    changed = {state["__id__"] for state in first.values() if state["changes"]}
    assert {"salt-dns-config", "salt-dns-zone", "salt-dns-service", "salt-dns-reload-zones"} <= changed, changed
    assert all(state["result"] is True for state in second.values()), second
    assert {key: state["changes"] for key, state in second.items() if state["changes"]} == {}
    service = next(state for state in second.values() if state["__id__"] == "salt-dns-service")
    assert service["comment"] == "The service gdnsd is already running", service

    answers = json.loads((sandbox.out / "query1.json").read_text())
    for server in ("10.10.10.2", "127.0.0.1"):
        assert answers[f"{server} db2"] == ["NOERROR", "10.10.10.12"]
        assert answers[f"{server} masterdb"] == ["NOERROR", "10.10.10.11"]
        assert answers[f"{server} no-such-host"] == ["NXDOMAIN"]
        assert answers[f"{server} ptr12"] == ["NOERROR", "db2.production.wpdn."]
    etc = sandbox.upper["etc"]
    assert "10.10.10.2," in (etc / "gdnsd" / "config").read_text()
    assert (sandbox.upper["sbin"] / "rolestack-gdnsd-check").stat().st_mode & 0o111

    # an inventory commit (db2 moves): only the zone changes, gdnsd reloads it, the serial moves on; and the CA
    # records db2's policies with its new address (its certificate's fixed subjectAltName); the jump box's ssh_config
    # names db2's new address
    third = _load(sandbox.out / "apply3.json")
    assert all(state["result"] is True for state in third.values()), third
    changed = {state["__id__"] for state in third.values() if state["changes"]}
    assert changed == {
        "salt-dns-zone",
        "salt-dns-reverse-zone",
        "salt-dns-reload-zones",
        "salt-ca-policies-record",
        "salt-jumpbox-ssh-config",
    }, changed
    assert "HostName 10.10.10.13" in (etc / "rolestack" / "ssh_config").read_text()
    after = json.loads((sandbox.out / "query2.json").read_text())
    assert after["10.10.10.2 db2"] == ["NOERROR", "10.10.10.13"]
    assert after["10.10.10.2 serial"] != answers["10.10.10.2 serial"]
    assert after["10.10.10.2 ptr12"] == ["NXDOMAIN"]
    fourth = _load(sandbox.out / "apply4.json")
    assert {key: state["changes"] for key, state in fourth.items() if state["changes"]} == {}
