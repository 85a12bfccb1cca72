#!/usr/bin/env python3
"""
A steady write load for bench/mariadb, run inside a lab host: one INSERT per `--interval` seconds, autocommit,
into whichever db host accepts writes (it tries them in turn, as a client behind a proxy would). Every
acknowledged insert is logged as "<id> <monotonic seconds> <host>" and flushed, so a write block (the gap
between acknowledgements) and acknowledged-but-lost rows can be computed afterwards.

    write_load.py --hosts 10.10.10.11,10.10.10.12 --user bench --password ... --log /root/acks.log
"""

import argparse
import signal
import sys
import time

import pymysql


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--start", type=int, default=1)
    args = parser.parse_args()
    hosts = args.hosts.split(",")
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    conn, host, next_id = None, None, args.start
    with open(args.log, "a", buffering=1) as log:
        while running:
            if conn is None:
                for candidate in hosts:
                    try:
                        conn = pymysql.connect(host=candidate, user=args.user, password=args.password,
                                               database="bench", connect_timeout=1, read_timeout=15,
                                               write_timeout=5, autocommit=True)  # fmt: skip
                        host = candidate
                        break
                    except pymysql.MySQLError:
                        conn = None
                if conn is None:
                    time.sleep(0.05)
                    continue
            try:
                with conn.cursor() as cursor:
                    cursor.execute("INSERT INTO bench.acks (id) VALUES (%s)", (next_id,))
                log.write(f"{next_id} {time.monotonic():.4f} {host}\n")
                next_id += 1
                time.sleep(args.interval)
            except pymysql.MySQLError:
                # read-only, gone, or a duplicate after an ambiguous failure: move on to another host
                with_conn, conn = conn, None
                try:
                    with_conn.close()
                except pymysql.MySQLError:
                    pass
                hosts = hosts[1:] + hosts[:1]
                next_id += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
