"""
A small memcached load generator (text protocol, standard library only, so it also runs in a lab host as
``python - <args>`` with this file on stdin): ``--connections`` connections spread over ``--processes`` processes,
each connection with one request outstanding (no pipelining), alternating set and get over a key space; every
request's latency is measured. memcslap is not used: it reports no latency percentiles.

Prints one JSON object: ops, ops_per_s, errors, p50_ms, p99_ms, seconds.
"""

import argparse
import json
import multiprocessing
import os
import selectors
import socket
import time


def _complete(reply):
    if not reply.endswith(b"\r\n"):
        return False
    return not reply.startswith(b"VALUE ") or reply.endswith(b"\r\nEND\r\n")


def _worker(host, port, connections, duration, keys, value_size, out):
    value = b"x" * value_size
    selector = selectors.DefaultSelector()
    latencies, errors, ops = [], 0, 0
    conns = []
    for index in range(connections):
        sock = socket.create_connection((host, port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        state = {"sock": sock, "n": index, "buf": b"", "sent": 0.0}
        conns.append(state)
        selector.register(sock, selectors.EVENT_READ, state)

    def send(state):
        state["n"] += 1
        key = b"load:%d" % (state["n"] * 7919 % keys)
        set_request = b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)
        request = set_request if state["n"] % 2 else b"get %s\r\n" % key
        state["buf"] = b""
        state["sent"] = time.perf_counter()
        state["sock"].sendall(request)

    end = time.perf_counter() + duration
    for state in conns:
        send(state)
    while time.perf_counter() < end:
        for key, _ in selector.select(timeout=1):
            state = key.data
            chunk = state["sock"].recv(65536)
            if not chunk:
                raise SystemExit("a memcached connection closed")
            state["buf"] += chunk
            if _complete(state["buf"]):
                latencies.append(time.perf_counter() - state["sent"])
                ops += 1
                if state["buf"].startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")):
                    errors += 1
                send(state)
    for state in conns:
        state["sock"].close()
    out.put({"ops": ops, "errors": errors, "latencies": latencies})


def run(host, port, connections=50, processes=None, duration=5.0, keys=10000, value_size=100):
    processes = processes or min(connections, os.cpu_count() or 1)
    shares = [connections // processes + (1 if index < connections % processes else 0) for index in range(processes)]
    context = multiprocessing.get_context("fork")  # also when this file is read from stdin (`python -`)
    queue = context.Queue()
    workers = [
        context.Process(target=_worker, args=(host, port, share, duration, keys, value_size, queue))
        for share in shares
        if share
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=duration + 60) for _ in workers]
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    latencies = sorted(latency for result in results for latency in result["latencies"])
    ops = sum(result["ops"] for result in results)

    def percentile(fraction):
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000 if latencies else None

    return {
        "ops": ops,
        "ops_per_s": ops / duration,
        "errors": sum(result["errors"] for result in results),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "seconds": seconds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11211)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(run(args.host, args.port, args.connections, args.processes, args.duration, args.keys,
                         args.value_size)))  # fmt: skip


if __name__ == "__main__":
    main()
