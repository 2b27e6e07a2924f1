#!/usr/bin/env python3
"""An oracle outside jellysnap: is database B exactly what database A was?

Usage: compare.py A.db B.db     prints every difference; exit 0 if none, 1 if any
       compare.py --self-test   shows that the oracle catches one-value differences

It reads with Python's sqlite3 module and the `sqlite3` CLI (the SQLite that wrote the
corpus, not the one bundled in jellysnap), and compares everything an application can
observe: settings, sqlite_schema rows and their order, every row of every table with its
rowid and each column's storage class and exact value (text as raw bytes in the
database's encoding, reals as their IEEE-754 bits), the stat tables and sqlite_sequence
(they are tables too), the full output of integrity_check and foreign_key_check (equal,
not empty: a source may hold orphan rows), and `sqlite3 X .dump` byte for byte.

Inputs are never opened in place: each is copied with its -wal (never its -shm) into a
temp dir first, because even a read-only connection to a WAL database creates side files.
"""

import difflib
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile

# No __pycache__ in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appdefs  # noqa: E402

# Lines of diff printed per section; the count of the rest is always printed.
MAX_LINES = 60


def copy_db(src, dst_dir):
    """Copy a database and its WAL (committed data may live only there) to dst_dir."""
    dst = os.path.join(dst_dir, "db.sqlite")
    shutil.copyfile(src, dst)
    if os.path.exists(src + "-wal"):
        shutil.copyfile(src + "-wal", dst + "-wal")
    return dst


def qid(name):
    return '"' + name.replace('"', '""') + '"'


def decode(b):
    return b.decode("utf-8", "surrogateescape") if isinstance(b, bytes) else b


def value(typ, v):
    if typ == "real":
        return "real:%s(%r)" % (struct.pack(">d", v).hex(), v)
    if typ in ("text", "blob"):
        return "%s:%s" % (typ, v)
    if typ == "integer":
        return "integer:%d" % v
    return typ


def header_fields(path):
    with open(path, "rb") as f:
        h = f.read(100)
    if len(h) < 100:
        return ["header: short file (%d bytes)" % len(h)]
    be = lambda off: struct.unpack(">I", h[off:off + 4])[0]  # noqa: E731
    return [
        "header.file_format_write=%d" % h[18],
        "header.file_format_read=%d" % h[19],
        "header.reserved_bytes=%d" % h[20],
        "header.schema_format=%d" % be(44),
        "header.default_cache_size=%d" % be(48),
        "header.text_encoding=%d" % be(56),
        "header.incremental_vacuum=%d" % be(64),
    ]


def settings(conn, path):
    out = []
    for p in ("page_size", "auto_vacuum", "encoding", "user_version", "application_id",
              "journal_mode"):
        out.append("%s=%s" % (p, conn.execute("PRAGMA " + p).fetchone()[0]))
    return out + header_fields(path)


def schema(conn):
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY rowid").fetchall()
    return [(decode(t), decode(n), decode(tn), decode(s)) for t, n, tn, s in rows]


def rowid_alias(conn, table, colnames):
    """The name that reaches the rowid, None for WITHOUT ROWID, "" when all are shadowed."""
    lower = {c.lower() for c in colnames}
    free = [a for a in ("rowid", "_rowid_", "oid") if a not in lower]
    if not free:
        return ""
    try:
        conn.execute("SELECT %s FROM %s LIMIT 0" % (free[0], qid(table)))
    except sqlite3.OperationalError:
        return None
    return free[0]


def table_rows(conn, table, virtual):
    """Lines describing the columns and every row of `table`, in key order."""
    try:
        cols = conn.execute("SELECT name, type, \"notnull\", dflt_value, pk, hidden "
                            "FROM pragma_table_xinfo(?)", (table,)).fetchall()
    except sqlite3.Error as e:
        return ["error reading columns: %s" % e]
    lines = ["column %r %r notnull=%s default=%r pk=%s hidden=%s" % tuple(map(decode, c))
             for c in cols]
    # Hidden columns of virtual tables are arguments, not stored values.
    names = [decode(c[0]) for c in cols if not (virtual and c[5] == 1)]
    alias = rowid_alias(conn, table, names)
    exprs = []
    for n in names:
        q = qid(n)
        exprs.append("typeof(%s)" % q)
        exprs.append("CASE typeof(%s) WHEN 'text' THEN hex(CAST(%s AS BLOB)) "
                     "WHEN 'blob' THEN hex(%s) ELSE %s END" % (q, q, q, q))
    select = ", ".join(([alias] if alias else []) + exprs) or "1"
    sql = "SELECT %s FROM %s" % (select, qid(table))
    if not virtual:
        sql += " NOT INDEXED"
    if alias:
        sql += " ORDER BY %s" % alias
    if alias == "":
        lines.append("rowid: shadowed by columns; rows in scan order")
    elif alias is None and not virtual:
        lines.append("rowid: none (WITHOUT ROWID); rows in primary key order")
    try:
        for r in conn.execute(sql):
            vals = r[1:] if alias else r
            cells = [value(vals[i], vals[i + 1]) for i in range(0, len(exprs), 2)]
            key = "rowid=%d" % r[0] if alias else "row"
            lines.append(key + " | " + " | ".join(cells))
    except sqlite3.Error as e:
        lines.append("error reading rows: %s" % e)
    return lines


def pragma_lines(conn, sql):
    try:
        return [" | ".join(map(str, map(decode, r))) for r in conn.execute(sql)]
    except sqlite3.Error as e:
        return ["error: %s" % e]


def cli_dump(path):
    p = subprocess.run(["sqlite3", "-readonly", path, ".dump"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    return p.stdout + (b"\n-- stderr: " + p.stderr if p.stderr else b"") + (
        b"\n-- exit %d" % p.returncode if p.returncode else b"")


def observe(path):
    """Everything compared, as named sections of lines (and the .dump bytes)."""
    # The CLI first: a Python connection open at the same time would not change what it
    # reads, but this keeps the two readers strictly apart.
    dump = cli_dump(path)
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    conn.text_factory = decode
    appdefs.register(conn)
    sections = {"settings": settings(conn, path)}
    sch = schema(conn)
    sections["schema (sqlite_schema in rowid order)"] = [
        "%s %r on %r: %r" % r for r in sch]
    sections["integrity_check"] = pragma_lines(conn, "PRAGMA integrity_check(1000000)")
    sections["foreign_key_check"] = pragma_lines(conn, "PRAGMA foreign_key_check")
    tables = {}
    for typ, name, _, sql in sch:
        if typ == "table":
            virtual = (sql or "").lstrip().upper().startswith("CREATE VIRTUAL")
            tables[name] = table_rows(conn, name, virtual)
    conn.close()
    return sections, tables, dump


def diff_lines(title, a, b, out):
    if a == b:
        return
    d = list(difflib.unified_diff(a, b, "A", "B", lineterm="", n=1))[2:]
    out.append("== %s differs" % title)
    out.extend("   " + x for x in d[:MAX_LINES])
    if len(d) > MAX_LINES:
        out.append("   ... %d more diff lines" % (len(d) - MAX_LINES))


def compare(a_path, b_path):
    """The list of differences between two databases (empty when they are equal)."""
    with tempfile.TemporaryDirectory(prefix="corpus-compare-") as tmp:
        da, db = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        os.mkdir(da)
        os.mkdir(db)
        sa, ta, dump_a = observe(copy_db(a_path, da))
        sb, tb, dump_b = observe(copy_db(b_path, db))
    out = []
    for k in sa:
        diff_lines(k, sa[k], sb[k], out)
    schema_key = "schema (sqlite_schema in rowid order)"
    if sa[schema_key] != sb[schema_key] and sorted(sa[schema_key]) == sorted(sb[schema_key]):
        out.append("== schema: same rows in a different order")
    for name in sorted(set(ta) | set(tb)):
        if name not in tb:
            out.append("== table %r: only in A" % name)
        elif name not in ta:
            out.append("== table %r: only in B" % name)
        else:
            diff_lines("table %r" % name, ta[name], tb[name], out)
    if dump_a != dump_b:
        la = dump_a.decode("utf-8", "backslashreplace").splitlines()
        lb = dump_b.decode("utf-8", "backslashreplace").splitlines()
        diff_lines("sqlite3 .dump (bytes)", la, lb, out)
        if la == lb:
            out.append("== sqlite3 .dump: bytes differ (not as decoded lines)")
    return out


def self_test():
    """The oracle must see a single changed value of every kind it claims to compare."""
    setup = [
        "PRAGMA user_version=3",
        "CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, r REAL, u, s TEXT, "
        "g TEXT AS (s || '!') STORED)",
        "CREATE INDEX t_s ON t(s)",
        "CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID",
        "CREATE TABLE p(id INTEGER PRIMARY KEY)",
        "CREATE TABLE c(pid REFERENCES p(id))",
        "INSERT INTO t(r, u, s) VALUES (0.3, 1, 'a' || char(0) || 'b'), (2.5, 2.0, 'x')",
        "INSERT INTO w VALUES ('k1', 1), ('k2', x'00ff')",
        "INSERT INTO c VALUES (7)",
        "ANALYZE",
    ]
    # (what changes, SQL that changes it, a section the diff must name)
    mutations = [
        ("one ulp of a real", "UPDATE t SET r = 0.30000000000000004 WHERE id = 1",
         "table 't'"),
        ("storage class of a value", "UPDATE t SET u = 2 WHERE id = 2", "table 't'"),
        ("a byte after a NUL in text", "UPDATE t SET s = 'a' || char(0) || 'c' WHERE id = 1",
         "table 't'"),
        ("a rowid", "UPDATE t SET id = 9 WHERE id = 2", "table 't'"),
        ("a WITHOUT ROWID value", "UPDATE w SET v = x'00fe' WHERE k = 'k2'", "table 'w'"),
        ("a stat1 row", "UPDATE sqlite_stat1 SET stat = '2 2' WHERE idx = 't_s'",
         "table 'sqlite_stat1'"),
        ("sqlite_sequence", "UPDATE sqlite_sequence SET seq = 5", "table 'sqlite_sequence'"),
        ("schema order", "DROP INDEX t_s; CREATE INDEX t_s ON t(s)", "different order"),
        ("a setting", "PRAGMA user_version=4", "settings"),
        ("an orphan row", "INSERT INTO p VALUES (7)", "foreign_key_check"),
        ("an index entry",
         "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql = "
         "'CREATE INDEX t_s ON t(u)' WHERE name = 't_s'", "integrity_check"),
        ("a value .dump prints", "UPDATE t SET s = 'y' WHERE id = 2", ".dump"),
    ]
    with tempfile.TemporaryDirectory(prefix="corpus-selftest-") as tmp:
        base = os.path.join(tmp, "base.db")
        conn = sqlite3.connect(base, isolation_level=None)
        for s in setup:
            conn.execute(s)
        conn.close()
        same = os.path.join(tmp, "same.db")
        shutil.copyfile(base, same)
        problems = ["identical copy: " + d for d in compare(base, same)]
        for what, sql, section in mutations:
            m = os.path.join(tmp, "m.db")
            shutil.copyfile(base, m)
            conn = sqlite3.connect(m, isolation_level=None)
            conn.executescript(sql)
            conn.close()
            found = compare(base, m)
            if not any(d.startswith("== ") and section in d for d in found):
                problems.append("not detected as %s: %s (diff: %s)" % (section, what, found))
        for name in os.listdir(tmp):
            if name.endswith(("-wal", "-shm")):
                problems.append("side file left beside an input: " + name)
    for p in problems:
        print(p)
    if problems:
        return 1
    print("self-test: identical copy equal; %d single-value changes all detected"
          % len(mutations))
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) != 3:
        print("usage: compare.py A.db B.db | compare.py --self-test", file=sys.stderr)
        return 2
    for p in argv[1:]:
        if not os.path.isfile(p):
            print("no such database: %s" % p, file=sys.stderr)
            return 2
    diffs = compare(argv[1], argv[2])
    for d in diffs:
        print(d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
