#!/usr/bin/env python3
"""A real worker process for the database scenarios.

Runs SQL against a real SQLite file in explicit-transaction mode, with
`{pid}` and `{start}` (this process's start time in clock ticks, as in
/proc/PID/stat) substituted, then signals readiness and stays alive.
Queue libraries' shapes are substituted too: `{host}` (this host's name),
`{name}` (a worker name derived at start-up, as queue libraries do, so it
never appears in the command line: `node-<hex pid>@<host>`, or the
`--hostname` value when given), and `{now_s}`, `{now_ms}`, `{now_us}`,
`{now_ns}` (the current time in that unit, read once at start-up).

  db_worker.py DB [--wal] [--exec SQL]... [--ready FILE] [--hold SECONDS]
               [--exec-after SQL]... [--on-term-dump SQL --dump FILE] [--exit]
               [--hostname NAME]

--exec statements run in order (use BEGIN/COMMIT yourself to hold a
transaction open); --ready is written once they ran; after --hold seconds the
--exec-after statements run; then the process sleeps until killed (or exits
with --exit). With --on-term-dump, SIGTERM makes it run the query and write
the rows to --dump before exiting: proof of what the database said at the
moment the worker was stopped.
"""
import argparse
import os
import signal
import socket
import sqlite3
import sys
import time


def start_ticks():
    with open("/proc/self/stat") as f:
        stat = f.read()
    return int(stat.rsplit(")", 1)[1].split()[19])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--wal", action="store_true")
    ap.add_argument("--exec", action="append", default=[])
    ap.add_argument("--ready")
    ap.add_argument("--hold", type=float, default=0.0)
    ap.add_argument("--exec-after", action="append", default=[])
    ap.add_argument("--on-term-dump")
    ap.add_argument("--dump")
    ap.add_argument("--exit", action="store_true")
    ap.add_argument("--hostname")
    ap.add_argument("--ignore-term", action="store_true")
    args = ap.parse_args()

    host = socket.gethostname()
    now_ns = time.time_ns()
    subst = {
        "pid": str(os.getpid()),
        "start": str(start_ticks()),
        "host": host,
        "name": args.hostname or "node-%x@%s" % (os.getpid(), host),
        "now_s": str(now_ns // 1_000_000_000),
        "now_ms": str(now_ns // 1_000_000),
        "now_us": str(now_ns // 1_000),
        "now_ns": str(now_ns),
    }
    conn = sqlite3.connect(args.db, isolation_level=None, timeout=10)
    if args.wal:
        conn.execute("PRAGMA journal_mode=WAL")

    if args.ignore_term:
        # A stubborn leftover: only KILL ends it, so a stop lasts its grace.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.on_term_dump:
        def on_term(_sig, _frame):
            rows = sqlite3.connect(args.db, timeout=10).execute(args.on_term_dump).fetchall()
            with open(args.dump + ".tmp", "w") as f:
                for row in rows:
                    f.write("|".join("" if v is None else str(v) for v in row) + "\n")
            os.rename(args.dump + ".tmp", args.dump)
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)

    for sql in args.exec:
        conn.execute(sql.format(**subst))
    if args.ready:
        with open(args.ready, "w") as f:
            f.write(subst["pid"])
    if args.hold:
        time.sleep(args.hold)
    for sql in args.exec_after:
        conn.execute(sql.format(**subst))
    if args.exit:
        return
    while True:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
