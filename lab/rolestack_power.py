#!/usr/bin/env python3
"""
The lab's power switch: what a hypervisor's or a PDU's power-off is to a real platform (db.failover's fencing hook,
docs/roles/db.md "Fail over"). The master runs inside the salt host's container and cannot reach the other
containers' processes; this agent runs on the machine and listens on a unix socket in a directory bind-mounted into
the salt container only.

    rolestack_power.py serve SOCKET LAB      on the machine (rolestack_lab.py up starts it): powers hosts off
    rolestack_power.py off SOCKET HOST       in the salt container (the master's rolestack_db_fence_command):
                                             exit 0 once HOST is off, 1 otherwise (the agent's message on stderr)

A request is one line, the host's name; the answer is one line: "0 <message>" (the host is off) or "1 <message>".
Standard library only: the client runs with any python of the container.
"""

import os
import re
import socket
import socketserver
import subprocess
import sys
from pathlib import Path

HOST_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
TIMEOUT = 60


def power_off(lab, host):
    """(status, message): the lab's own `fence` command (stop the container, check it is off)."""
    if not HOST_NAME.fullmatch(host):
        return 1, f"not a host name: {host[:80]!r}"
    cli = [sys.executable, str(Path(__file__).resolve().parent / "rolestack_lab.py"), "--name", lab, "fence", host]
    try:
        proc = subprocess.run(cli, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return 1, f"{host} not off after {TIMEOUT} s"
    message = " ".join((proc.stdout + proc.stderr).split())[-400:]
    return (0 if proc.returncode == 0 else 1), message


def serve(path, lab):
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            host = self.rfile.readline(200).decode(errors="replace").strip()
            status, message = power_off(lab, host)
            self.wfile.write(f"{status} {message}\n".encode())

    Path(path).unlink(missing_ok=True)
    with socketserver.UnixStreamServer(path, Handler) as server:
        os.chmod(path, 0o600)
        server.serve_forever()


def off(path, host):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(TIMEOUT + 10)
        conn.connect(path)
        conn.sendall(f"{host}\n".encode())
        answer = conn.makefile().readline().strip()
    status, _, message = answer.partition(" ")
    print(message, file=sys.stderr if status != "0" else sys.stdout)
    return 0 if status == "0" else 1


def main(argv):
    if len(argv) != 3 or argv[0] not in ("serve", "off"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "serve":
        serve(argv[1], argv[2])
        return 0
    try:
        return off(argv[1], argv[2])
    except OSError as err:
        print(f"the lab's power switch at {argv[1]} does not answer: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
