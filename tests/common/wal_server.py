"""A stand-in for a running Jellyfin server, written with another SQLite than jellysnap's.

Usage: wal_server.py DB ROWS [NAME]

Opens DB in WAL mode with automatic checkpoints off, commits ROWS rows to table
`wal_rows` (they stay in the -wal), prints `ready PID` and then answers one command per
stdin line with one stdout line, so that tests synchronise on its output:

  drop-locks  close a separate descriptor of DB and of DB-shm: POSIX locks belong to the
              process, so this drops all of its SQLite locks while its connection lives
  write       commit one more row                     -> wrote N
  count       count the rows of wal_rows              -> count N
  check       PRAGMA integrity_check                  -> check ok
  quit        close the connection and exit (so does end of input)

NAME, when given, becomes the process's name (/proc/PID/comm).
"""

import os
import sqlite3
import sys

db, rows = sys.argv[1], int(sys.argv[2])
if len(sys.argv) > 3:
    with open("/proc/self/comm", "w") as f:
        f.write(sys.argv[3])

conn = sqlite3.connect(db, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("CREATE TABLE IF NOT EXISTS wal_rows(id INTEGER PRIMARY KEY, v TEXT)")
for i in range(rows):
    conn.execute("INSERT INTO wal_rows(v) VALUES (?)", ("row %d" % i,))


def count():
    return conn.execute("SELECT count(*) FROM wal_rows").fetchone()[0]


print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "drop-locks":
        for path in (db, db + "-shm"):
            os.close(os.open(path, os.O_RDONLY))
        print("dropped", flush=True)
    elif cmd == "write":
        conn.execute("INSERT INTO wal_rows(v) VALUES ('one more')")
        print("wrote", count(), flush=True)
    elif cmd == "count":
        print("count", count(), flush=True)
    elif cmd == "check":
        print("check", conn.execute("PRAGMA integrity_check").fetchone()[0], flush=True)
    elif cmd == "quit":
        break
    else:
        print("unknown command", cmd, flush=True)
conn.close()
