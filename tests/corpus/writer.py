#!/usr/bin/env python3
"""Write to a corpus database the way a live server does.

Usage: writer.py hold DB     commit transactions that stay in DB-wal (no checkpoint),
                             print "ready", then keep the connection open until stdin
                             closes: a running server, for a backup to capture
       writer.py mutate DB   make DB differ from what it was (delete rows, add a table);
                             a WAL database is left with its -wal and -shm beside it, as a
                             killed server leaves them: what an in-place restore replaces
"""

import os
import sqlite3
import sys

# No __pycache__ in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appdefs  # noqa: E402


def user_tables(conn):
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite^_%' "
        "ESCAPE '^'").fetchall()
    return [n for n, sql in rows if not (sql or "").upper().startswith("CREATE VIRTUAL")]


def qid(name):
    return '"' + name.replace('"', '""') + '"'


def hold(db):
    conn = sqlite3.connect(db, isolation_level=None)
    appdefs.register(conn)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    for t in range(3):
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE IF NOT EXISTS live(id INTEGER PRIMARY KEY, tx, v)")
        for i in range(50):
            conn.execute("INSERT INTO live(tx, v) VALUES (?, ?)", (t, "committed %d" % i))
        if "items" in user_tables(conn):
            conn.execute("UPDATE items SET score = -id WHERE id % 5 = ?", (t,))
            conn.execute("DELETE FROM items WHERE id % 50 = ?", (t,))
        conn.execute("COMMIT")
    if not os.path.getsize(db + "-wal"):
        raise RuntimeError("the commits did not stay in the WAL")
    print("ready", flush=True)
    sys.stdin.read()
    conn.close()


def mutate(db):
    conn = sqlite3.connect(db, isolation_level=None)
    appdefs.register(conn)
    wal = conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("BEGIN")
    for t in user_tables(conn):
        try:
            conn.execute("DELETE FROM %s WHERE rowid IN (SELECT rowid FROM %s LIMIT 2)"
                         % (qid(t), qid(t)))
        except sqlite3.Error:
            pass  # WITHOUT ROWID, or shadowed rowid: the new table below is enough
    conn.execute("CREATE TABLE corpus_after_backup(x)")
    conn.execute("INSERT INTO corpus_after_backup VALUES ('written after the backup')")
    conn.execute("COMMIT")
    if wal:
        # Exit without closing: no checkpoint, -wal and -shm stay, as after a crash.
        sys.stdout.flush()
        os._exit(0)
    conn.close()


def main(argv):
    if len(argv) != 3 or argv[1] not in ("hold", "mutate"):
        print("usage: writer.py hold|mutate DB", file=sys.stderr)
        return 2
    (hold if argv[1] == "hold" else mutate)(argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
