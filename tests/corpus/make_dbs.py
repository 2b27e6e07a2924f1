#!/usr/bin/env python3
"""Build the database test corpus: usage make_dbs.py OUTDIR [CASE...]

Every database is written by the system's SQLite (Python's sqlite3 module and the `sqlite3`
CLI, Debian's 3.40 without STAT4), never by the SQLite bundled in jellysnap, because
Jellyfin's own SQLite differs from the bundled one too. Each case is a directory
OUTDIR/<name>/ holding jellyfin.db, closed cleanly (no -wal/-shm), and case.json:

  name    the case
  expect  "logical": the capture must be a logical dump that restores exactly;
          "physical": it must fall back to the physical copy (a rebuild cannot be exact);
          "either": either capture, as long as the restore is exact by compare.py
  why     what the case holds and why it is there
  live_writer  (optional) true: keep tests/corpus/writer.py `hold` running on the
          database during the backup, so that committed data lives only in its WAL

Everything is a pure function of the code: random data comes from seeded generators.
"""

import json
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import uuid

# No __pycache__ in the source tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appdefs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REAL_SCHEMA_DB = os.environ.get(
    "JELLYSNAP_REAL_SCHEMA_DB",
    os.path.join(HERE, "..", "..", "fixtures", "real", "jellyfin-10.11.0-fresh.db"))

CASES = []


def case(expect, why, **extra):
    def register(fn):
        CASES.append((fn.__name__, expect, why, extra, fn))
        return fn
    return register


def connect(path, **kw):
    conn = sqlite3.connect(path, isolation_level=None, **kw)
    return conn


def cli(db, sql):
    """Run SQL through Debian's sqlite3 CLI (a second writer, as Jellyfin's is)."""
    p = subprocess.run(["sqlite3", "-bail", db], input=sql.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0 or p.stderr:
        raise RuntimeError("sqlite3 %s: %s" % (db, p.stderr.decode(errors="replace")))
    return p.stdout.decode()


def run(conn, script):
    conn.executescript(script)


def words(rng, n):
    syll = ["ka", "lo", "mi", "ra", "ten", "vo", "shi", "an", "el", "dor", "qu", "ix"]
    return " ".join("".join(rng.choice(syll) for _ in range(rng.randint(1, 4)))
                    for _ in range(n))


def guid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()


def basic_rows(conn, seed, n=400):
    """A table with two indexes and one without any, as ANALYZE has something to say."""
    rng = random.Random(seed)
    run(conn, """
        CREATE TABLE items(id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, name TEXT, score);
        CREATE INDEX items_kind ON items(kind);
        CREATE INDEX items_name_kind ON items(name, kind);
        CREATE TABLE notes(body TEXT);
    """)
    conn.execute("BEGIN")
    for i in range(1, n + 1):
        conn.execute("INSERT INTO items VALUES (?, ?, ?, ?)",
                     (i, rng.randint(0, 7), words(rng, 2), rng.choice([None, i * 0.5, i])))
    for _ in range(20):
        conn.execute("INSERT INTO notes VALUES (?)", (words(rng, 5),))
    conn.execute("COMMIT")


# --- stat4 rows written by hand (this SQLite has no STAT4 to write them) ---------------

def varint(v):
    """SQLite's big-endian varint."""
    if v > 0x00ffffffffffffff:
        out = [v & 0xff]
        v >>= 8
        for _ in range(8):
            out.append((v & 0x7f) | 0x80)
            v >>= 7
        return bytes(reversed(out))
    out = [v & 0x7f]
    v >>= 7
    while v:
        out.append((v & 0x7f) | 0x80)
        v >>= 7
    return bytes(reversed(out))


def record(values):
    """An SQLite record (the format of an index key, as stat4's `sample` holds it)."""
    types, body = [], b""
    for v in values:
        if v is None:
            types.append(0)
        elif isinstance(v, int) and v in (0, 1):
            types.append(8 + v)
        elif isinstance(v, int):
            for st, size in ((1, 1), (2, 2), (3, 3), (4, 4), (5, 6), (6, 8)):
                if -(1 << (8 * size - 1)) <= v < (1 << (8 * size - 1)):
                    types.append(st)
                    body += (v & ((1 << (8 * size)) - 1)).to_bytes(size, "big")
                    break
        elif isinstance(v, float):
            types.append(7)
            body += struct.pack(">d", v)
        elif isinstance(v, str):
            b = v.encode()
            types.append(13 + 2 * len(b))
            body += b
        else:
            types.append(12 + 2 * len(v))
            body += v
    hdr = b"".join(varint(t) for t in types)
    # The header size counts its own varint.
    n = len(hdr) + 1
    if len(varint(n)) > 1:
        n += 1
    return varint(n) + hdr + body


def sort_key(v):
    # SQLite's order of storage classes: NULL < numbers < text < blob.
    if v is None:
        return (0, 0)
    if isinstance(v, (int, float)):
        return (1, v)
    if isinstance(v, str):
        return (2, v.encode())
    return (3, v)


def write_stat4(conn, table, index, cols, samples=6):
    """Real-looking sqlite_stat4 rows for an index on plain columns of a rowid table."""
    keys = [tuple(r) for r in conn.execute(
        "SELECT %s, rowid FROM %s" % (", ".join(cols), table))]
    keys.sort(key=lambda k: tuple(sort_key(v) for v in k))
    n = len(keys)
    for s in range(samples):
        i = (2 * s + 1) * n // (2 * samples)
        k = keys[i]
        neq, nlt, ndlt = [], [], []
        for depth in range(1, len(k) + 1):
            pre = k[:depth]
            neq.append(sum(1 for x in keys if x[:depth] == pre))
            lt = [x[:depth] for x in keys[:i] if x[:depth] != pre]
            nlt.append(len(lt))
            ndlt.append(len(set(lt)))
        conn.execute("INSERT INTO sqlite_stat4 VALUES (?, ?, ?, ?, ?, ?)",
                     (table, index, " ".join(map(str, neq)), " ".join(map(str, nlt)),
                      " ".join(map(str, ndlt)), record(list(k))))


def add_stat4(db):
    conn = connect(db)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("CREATE TABLE sqlite_stat4(tbl,idx,neq,nlt,ndlt,sample)")
    conn.execute("PRAGMA writable_schema=OFF")
    conn.execute("BEGIN")
    write_stat4(conn, "items", "items_kind", ["kind"])
    write_stat4(conn, "items", "items_name_kind", ["name", "kind"])
    conn.execute("COMMIT")
    conn.close()


def tables(db):
    conn = connect(db)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")]
    conn.close()
    return set(names)


# --- the cases ---------------------------------------------------------------------------

@case("logical", "sqlite_stat1 without sqlite_stat4, written by Debian's ANALYZE: "
      "what nearly every real Jellyfin server leaves (its SQLite has no STAT4)")
def stat1_only(db):
    basic_rows(connect(db), 1)
    cli(db, "ANALYZE;")
    assert {"sqlite_stat1"} <= tables(db) and "sqlite_stat4" not in tables(db)


@case("logical", "sqlite_stat4 without sqlite_stat1 (stat4 rows written by hand under "
      "writable_schema, stat1 dropped after ANALYZE)")
def stat4_only(db):
    basic_rows(connect(db), 2)
    cli(db, "ANALYZE;")
    add_stat4(db)
    cli(db, "DROP TABLE sqlite_stat1;")
    t = tables(db)
    assert "sqlite_stat4" in t and "sqlite_stat1" not in t


@case("logical", "both sqlite_stat1 and sqlite_stat4, stat4 written by hand")
def stat_both(db):
    basic_rows(connect(db), 3)
    cli(db, "ANALYZE;")
    add_stat4(db)


@case("logical", "no stat table at all, never analyzed")
def stat_none(db):
    basic_rows(connect(db), 4)
    assert not {"sqlite_stat1", "sqlite_stat4"} & tables(db)


@case("logical", "views, an INSTEAD OF trigger on a view and triggers that wrote an audit "
      "table: a rebuild that creates triggers before the rows would fire them again")
def triggers_views(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT NOT NULL, age INTEGER);
        CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT, at INTEGER);
        CREATE VIEW adults AS SELECT id, name FROM people WHERE age >= 18;
        CREATE VIEW counts(n, oldest) AS SELECT count(*), max(age) FROM people;
        CREATE TRIGGER people_ins AFTER INSERT ON people
          BEGIN INSERT INTO audit(what, at) VALUES ('ins ' || new.name, new.id); END;
        CREATE TRIGGER people_upd BEFORE UPDATE OF age ON people WHEN new.age < old.age
          BEGIN INSERT INTO audit(what, at) VALUES ('younger ' || old.name, old.age); END;
        CREATE TRIGGER adults_ins INSTEAD OF INSERT ON adults
          BEGIN INSERT INTO people(name, age) VALUES (new.name, 18); END;
    """)
    rng = random.Random(5)
    for _ in range(60):
        conn.execute("INSERT INTO people(name, age) VALUES (?, ?)",
                     (words(rng, 1), rng.randint(1, 90)))
    conn.execute("INSERT INTO adults(name) VALUES ('via view')")
    conn.execute("UPDATE people SET age = age - 1 WHERE id % 7 = 0")
    conn.close()


@case("logical", "generated columns, VIRTUAL and STORED, over integers and text only "
      "(recomputing them gives the same values in any SQLite), with indexes on them")
def generated_columns(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE g(
          a INTEGER, b INTEGER, name TEXT,
          v INTEGER GENERATED ALWAYS AS (a * 2 + b) VIRTUAL,
          s TEXT GENERATED ALWAYS AS (printf('%d-%d', a, b)) STORED,
          u TEXT AS (upper(name)) STORED,
          w AS (length(name)) VIRTUAL
        );
        CREATE INDEX g_v ON g(v);
        CREATE INDEX g_s ON g(s);
    """)
    rng = random.Random(6)
    conn.execute("BEGIN")
    for _ in range(200):
        conn.execute("INSERT INTO g(a, b, name) VALUES (?, ?, ?)",
                     (rng.randint(-1000, 1000), rng.randint(0, 9), words(rng, 2)))
    conn.execute("COMMIT")
    conn.close()


@case("logical", "STRICT tables (also STRICT WITHOUT ROWID) with every column type and ANY")
def strict_tables(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE s(id INTEGER PRIMARY KEY, i INT, r REAL, t TEXT, b BLOB, a ANY) STRICT;
        CREATE TABLE sw(k TEXT PRIMARY KEY, n INTEGER NOT NULL, a ANY) STRICT, WITHOUT ROWID;
        INSERT INTO s VALUES (1, 5, 5, 'five', x'05', '123');
        INSERT INTO s VALUES (2, -9223372036854775808, 1e308, '', x'', 1.0);
        INSERT INTO s VALUES (3, NULL, -0.5, 'ü', NULL, x'00');
        INSERT INTO s VALUES (4, 9223372036854775807, 0.1, '7', x'ff', NULL);
        INSERT INTO sw VALUES ('b', 2, 'text'), ('a', 1, 2.5), ('c', 3, 3);
    """)
    conn.close()


@case("logical", "WITHOUT ROWID tables: text key, and a composite DESC key with a "
      "NOCASE part")
def without_rowid(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        CREATE TABLE c(a INTEGER, b TEXT COLLATE NOCASE, c, PRIMARY KEY(a DESC, b))
          WITHOUT ROWID;
        CREATE INDEX c_c ON c(c);
    """)
    rng = random.Random(7)
    conn.execute("BEGIN")
    for i in range(300):
        conn.execute("INSERT INTO kv VALUES (?, ?)", ("key%05d" % rng.randint(0, 99999), i))
    for i in range(200):
        conn.execute("INSERT OR IGNORE INTO c VALUES (?, ?, ?)",
                     (rng.randint(0, 20), rng.choice(["a", "B", "c", "D"]) + str(i % 9),
                      rng.choice([None, i, "x%d" % i, i / 4])))
    conn.execute("COMMIT")
    conn.close()


@case("logical", "rowid gaps after deletes, rowids 0, negative and the largest, and an "
      "INTEGER PRIMARY KEY alias with gaps")
def rowid_gaps(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE plain(x TEXT);
        CREATE TABLE aliased(id INTEGER PRIMARY KEY, x TEXT);
    """)
    rng = random.Random(8)
    conn.execute("BEGIN")
    for i in range(1000):
        conn.execute("INSERT INTO plain(x) VALUES (?)", (words(rng, 1),))
        conn.execute("INSERT INTO aliased(x) VALUES (?)", ("row %d" % i,))
    conn.execute("DELETE FROM plain WHERE (rowid * 2654435761) % 10 < 3")
    conn.execute("DELETE FROM aliased WHERE (id * 40503) % 10 < 4")
    for rid in (0, -5, -9223372036854775808, 10 ** 12, 9223372036854775807):
        conn.execute("INSERT INTO plain(rowid, x) VALUES (?, ?)", (rid, "at %d" % rid))
        conn.execute("INSERT INTO aliased(id, x) VALUES (?, ?)", (rid, "at %d" % rid))
    conn.execute("COMMIT")
    conn.close()


@case("logical", "a column named rowid shadows the rowid; the real rowid (with gaps) is "
      "still reachable as oid and _rowid_")
def shadowed_rowid(db):
    conn = connect(db)
    run(conn, "CREATE TABLE s(rowid TEXT, x INTEGER);")
    conn.execute("BEGIN")
    for i in range(100):
        conn.execute("INSERT INTO s(rowid, x) VALUES (?, ?)", ("r%d" % (100 - i), i))
    conn.execute("DELETE FROM s WHERE x % 3 = 0")
    conn.execute("INSERT INTO s(oid, rowid, x) VALUES (5000, 'late', -1)")
    conn.execute("COMMIT")
    conn.close()


@case("either", "columns named rowid, oid and _rowid_ hide the real rowid from SQL "
      "entirely; only the scan order shows it")
def shadowed_rowid_all(db):
    conn = connect(db)
    run(conn, 'CREATE TABLE s("rowid" TEXT, "oid" INTEGER, "_rowid_" REAL, x);')
    conn.execute("BEGIN")
    for i in range(50):
        conn.execute("INSERT INTO s VALUES (?, ?, ?, ?)", ("r%d" % i, 50 - i, i / 2, i))
    conn.execute("DELETE FROM s WHERE x % 4 = 1")
    conn.execute("COMMIT")
    conn.close()


@case("logical", "AUTOINCREMENT tables whose sqlite_sequence is ahead of max(rowid) "
      "(rows deleted from the top, seq raised by hand) and one emptied entirely")
def autoincrement_ahead(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT, x);
        CREATE TABLE b(id INTEGER PRIMARY KEY AUTOINCREMENT, x);
        CREATE TABLE c(id INTEGER PRIMARY KEY AUTOINCREMENT, x);
    """)
    conn.execute("BEGIN")
    for i in range(100):
        conn.execute("INSERT INTO a(x) VALUES (?)", (i,))
        conn.execute("INSERT INTO b(x) VALUES (?)", (i,))
    conn.execute("INSERT INTO c(x) VALUES (1)")
    conn.execute("DELETE FROM a WHERE id > 80")
    conn.execute("UPDATE sqlite_sequence SET seq = 5000 WHERE name = 'b'")
    conn.execute("DELETE FROM c")
    conn.execute("COMMIT")
    conn.close()


@case("logical", "sqlite_sequence left behind, empty, after its only AUTOINCREMENT table "
      "was dropped")
def seq_dropped_table(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE keep(x);
        CREATE TABLE gone(id INTEGER PRIMARY KEY AUTOINCREMENT, x);
        INSERT INTO gone(x) VALUES (1), (2);
        INSERT INTO keep VALUES ('still here');
        DROP TABLE gone;
    """)
    assert conn.execute("SELECT count(*) FROM sqlite_sequence").fetchone()[0] == 0
    conn.close()


@case("logical", "a sqlite_sequence row naming a table that does not exist, and no "
      "AUTOINCREMENT table at all")
def seq_ghost_row(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE gone(id INTEGER PRIMARY KEY AUTOINCREMENT, x);
        CREATE TABLE keep(x);
        INSERT INTO keep VALUES (1);
        DROP TABLE gone;
        INSERT INTO sqlite_sequence VALUES ('ghost', 42), ('keep', 7);
    """)
    conn.close()


@case("logical", "affinity edge values: numeric text in TEXT, integral reals, extreme and "
      "overflowing integers, -0.0, infinities, 1e308, subnormals, NaN (stored as NULL), "
      "text in numeric columns; user_version and application_id set")
def affinity_edges(db):
    conn = connect(db)
    run(conn, """
        PRAGMA user_version = 7;
        PRAGMA application_id = 1246973520;
        CREATE TABLE a(id INTEGER PRIMARY KEY, t TEXT, r REAL, i INTEGER, n NUMERIC, b BLOB, u);
        CREATE INDEX a_r ON a(r);
        CREATE INDEX a_u ON a(u);
    """)
    inf = float("inf")
    rows = [
        ("123", 1.0, 9223372036854775807, "1e3", b"", -0.0),
        (" 12", -0.0, -9223372036854775808, "1.0", b"\x00", 0.1 + 0.2),
        ("1e3", 1e308, "9223372036854775808", "abc", None, inf),
        ("0x10", inf, 1.5, "  7  ", b"\xff" * 3, -inf),
        ("-0", -inf, "0x10", "9223372036854775808", None, 5e-324),
        ("", 5e-324, 2.0, 1e-300, b"x", float("nan")),
        ("NaN", "NaN", "12abc", "Infinity", None, "123"),
        ("1.0", 3, "-0", "-0.0", None, 2 ** 62),
        (None, 0.1 + 0.2, " 42 ", ".5", None, 1.0),
        ("x" * 3, 1 / 3, -1, 1e15 + 0.3, None, -1e-310),
    ]
    conn.execute("BEGIN")
    for r in rows:
        conn.execute("INSERT INTO a(t, r, i, n, b, u) VALUES (?, ?, ?, ?, ?, ?)", r)
    conn.execute("INSERT INTO a(t, r, i, n, u) VALUES ('lit', 1e999, -1e999, 1e308*10, 9e18)")
    conn.execute("COMMIT")
    conn.close()


@case("logical", "NUL bytes inside text values, also in an indexed column")
def nul_in_text(db):
    conn = connect(db)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, u); CREATE INDEX t_s ON t(s);")
    for s in ("a\x00b", "\x00", "abc\x00", "\x00\x00x", "plain", "é\x00é"):
        conn.execute("INSERT INTO t(s, u) VALUES (?, ?)", (s, s))
    conn.execute("INSERT INTO t(s, u) VALUES ('lit' || char(0) || 'eral', x'610062')")
    conn.close()


@case("logical", "text that is not valid UTF-8 (CAST of blobs): truncated sequences, "
      "0xff, encoded surrogates, beyond U+10FFFF, overlong forms; also indexed")
def invalid_utf8(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, n TEXT COLLATE NOCASE);
        CREATE INDEX t_s ON t(s);
        CREATE INDEX t_n ON t(n);
        INSERT INTO t(s, n) VALUES (CAST(x'c328' AS TEXT), CAST(x'41c3' AS TEXT));
        INSERT INTO t(s, n) VALUES (CAST(x'ff' AS TEXT), CAST(x'eda080' AS TEXT));
        INSERT INTO t(s, n) VALUES (CAST(x'f4908080' AS TEXT), CAST(x'c0af' AS TEXT));
        INSERT INTO t(s, n) VALUES (CAST(x'616263ff00646566' AS TEXT), 'ok');
        INSERT INTO t(s, n) VALUES ('valid é', CAST(x'80' AS TEXT));
    """)
    conn.close()


def utf16_case(db, enc, lone):
    conn = connect(db)
    run(conn, """
        PRAGMA encoding = '%s';
        CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, n TEXT COLLATE NOCASE);
        CREATE INDEX t_s ON t(s);
        CREATE INDEX t_n ON t(n);
    """ % enc)
    for s in ("plain", "é à ü", "名前", "emoji 😀 pair", "", "nul\x00inside"):
        conn.execute("INSERT INTO t(s, n) VALUES (?, ?)", (s, s.upper()))
    for hexstr in lone:
        conn.execute("INSERT INTO t(s, n) VALUES (CAST(x'%s' AS TEXT), 'lone')" % hexstr)
    got = conn.execute("PRAGMA encoding").fetchone()[0]
    assert got == enc, got
    conn.close()


@case("either", "a UTF-16le database, with text holding lone surrogates (not valid "
      "UTF-16): the text must come back as the same bytes")
def utf16le(db):
    # '=' U+D800 'A', a lone low surrogate, and a high surrogate at the end.
    utf16_case(db, "UTF-16le", ["3d0000d84100", "00dc", "410000d8"])


@case("either", "a UTF-16be database, with text holding lone surrogates")
def utf16be(db):
    utf16_case(db, "UTF-16be", ["003dd8000041", "dc00", "0041d800"])


@case("logical", "odd identifiers: quotes, spaces, newline, unicode, keywords, brackets, "
      "backticks, names starting with sqlite but not sqlite_")
def odd_identifiers(db):
    conn = connect(db)
    # One statement per line; "\n" puts a newline inside a table name.
    stmts = [
        'CREATE TABLE "we""ird" ("col ""q""" TEXT, "ü" INTEGER, [br]acket TEXT)',
        'CREATE TABLE "with space" ("a b" INTEGER PRIMARY KEY, `back``tick` TEXT)',
        'CREATE TABLE "名前" ("列" TEXT)',
        'CREATE TABLE sqlitefoo (x)',
        'CREATE TABLE "sqlite" (x)',
        'CREATE TABLE "SQLITEbar" (x)',
        'CREATE TABLE "new\nline" ("semi;colon" TEXT, "select" INTEGER)',
        'CREATE TABLE "-dash\'quote" (x)',
        'CREATE INDEX "idx ""q""" ON "we""ird" ("col ""q""")',
        'CREATE INDEX "名前_idx" ON "名前" ("列")',
        'CREATE VIEW "view with ""q""" AS SELECT "ü" FROM "we""ird"',
        'CREATE TRIGGER "trig\'1" AFTER INSERT ON sqlitefoo BEGIN SELECT 1; END',
        'INSERT INTO "we""ird" VALUES (\'a\', 1, \'b\'), (\'"\', 2, \'\'\'\')',
        'INSERT INTO "with space" VALUES (1, \'x\'), (3, \'y\')',
        'INSERT INTO "名前" VALUES (\'値\')',
        'INSERT INTO sqlitefoo VALUES (1)',
        'INSERT INTO "sqlite" VALUES (2)',
        'INSERT INTO "SQLITEbar" VALUES (3)',
        'INSERT INTO "new\nline" VALUES (\'a;b\', 4)',
        'INSERT INTO "-dash\'quote" VALUES (5)',
    ]
    for st in stmts:
        conn.execute(st)
    conn.close()


@case("logical", "a table named abcdefé, whose 7th byte falls inside a multi-byte "
      "character, and an index named likewise")
def name_multibyte(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE abcdefé (x TEXT);
        CREATE INDEX abcdefé_x ON abcdefé (x);
        CREATE TABLE sqlitü (y);
        INSERT INTO abcdefé VALUES ('one'), ('two');
        INSERT INTO sqlitü VALUES (1);
    """)
    conn.close()


@case("logical", "NOCASE and RTRIM collations on columns, unique constraints and indexes")
def collations(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE c(a TEXT COLLATE NOCASE UNIQUE, b TEXT COLLATE RTRIM, c TEXT);
        CREATE INDEX c_b ON c(b);
        CREATE INDEX c_c_nocase ON c(c COLLATE NOCASE DESC);
        CREATE UNIQUE INDEX c_cr ON c(c COLLATE RTRIM) WHERE c IS NOT NULL;
        INSERT INTO c VALUES ('abc', 'x', 'Q'), ('ABD', 'x ', 'q '), ('Zeta', 'y  ', NULL),
                             ('éa', 'É', 'é'), ('b', 'b', 'B');
    """)
    conn.close()


@case("logical", "partial indexes, expression indexes (lower(), arithmetic, json_extract) "
      "and a unique partial index; no REAL->TEXT in any expression")
def partial_expr_indexes(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, j TEXT);
        CREATE INDEX t_big ON t(a) WHERE a > 100;
        CREATE INDEX t_lower ON t(lower(b));
        CREATE INDEX t_plus ON t(a + 1 DESC, b);
        CREATE INDEX t_json ON t(json_extract(j, '$.k'));
        CREATE UNIQUE INDEX t_uniq ON t(b) WHERE a < 0;
    """)
    rng = random.Random(9)
    conn.execute("BEGIN")
    for i in range(300):
        conn.execute("INSERT INTO t(a, b, j) VALUES (?, ?, ?)",
                     (rng.randint(-50, 200), "%s%d" % (words(rng, 1).title(), i),
                      json.dumps({"k": rng.randint(0, 9), "i": i})))
    conn.execute("COMMIT")
    conn.close()


@case("logical", "foreign keys declared but off (SQLite's default): orphan child rows, and "
      "a reference to a table that does not exist; foreign_key_check is not empty")
def fk_violations(db):
    conn = connect(db)
    run(conn, """
        PRAGMA foreign_keys = OFF;
        CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE child(id INTEGER PRIMARY KEY,
                           pid INTEGER REFERENCES parent(id) ON DELETE CASCADE,
                           other REFERENCES nosuch(id));
        INSERT INTO parent VALUES (1, 'one'), (2, 'two'), (3, 'three');
        INSERT INTO child(pid) VALUES (1), (2), (2), (3), (4), (99);
        DELETE FROM parent WHERE id = 2;
        INSERT INTO child(pid, other) VALUES (1, 5);
    """)
    assert conn.execute("PRAGMA foreign_key_check").fetchall()
    conn.close()


@case("logical", "rows that violate CHECK constraints (inserted with "
      "ignore_check_constraints): they must come back as they were")
def check_violations(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE t(x INTEGER CHECK (x > 0), y TEXT CHECK (length(y) < 5),
                       CONSTRAINT both_ok CHECK (x < 1000 OR y IS NULL));
        INSERT INTO t VALUES (1, 'ok');
        PRAGMA ignore_check_constraints = ON;
        INSERT INTO t VALUES (-1, 'toolong'), (5000, 'abc'), (0, NULL);
        PRAGMA ignore_check_constraints = OFF;
    """)
    conn.close()


def pages_case(db, size):
    conn = connect(db)
    run(conn, "PRAGMA page_size = %d; CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, b BLOB);"
        "CREATE INDEX t_s ON t(s);" % size)
    rng = random.Random(size)
    conn.execute("BEGIN")
    for i in range(300):
        conn.execute("INSERT INTO t(s, b) VALUES (?, ?)",
                     (words(rng, rng.randint(1, 400)), rng.randbytes(rng.randint(0, 3000))))
    conn.execute("COMMIT")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == size
    conn.close()


@case("logical", "1024-byte pages, with overflow pages")
def page_1024(db):
    pages_case(db, 1024)


@case("logical", "8192-byte pages")
def page_8192(db):
    pages_case(db, 8192)


@case("logical", "65536-byte pages (the largest)")
def page_65536(db):
    pages_case(db, 65536)


def vacuum_case(db, mode):
    conn = connect(db)
    run(conn, "PRAGMA auto_vacuum = %s; CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT);" % mode)
    rng = random.Random(len(mode))
    conn.execute("BEGIN")
    for _ in range(500):
        conn.execute("INSERT INTO t(s) VALUES (?)", (words(rng, 50),))
    conn.execute("COMMIT")
    conn.execute("DELETE FROM t WHERE id % 3 = 0 OR id BETWEEN 100 AND 400")
    conn.close()


@case("logical", "auto_vacuum = FULL")
def autovacuum_full(db):
    vacuum_case(db, "FULL")


@case("logical", "auto_vacuum = INCREMENTAL, with free pages not yet reclaimed")
def autovacuum_incremental(db):
    vacuum_case(db, "INCREMENTAL")
    conn = connect(db)
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] > 0
    conn.close()


def journal_case(db, mode):
    conn = connect(db)
    assert conn.execute("PRAGMA journal_mode = %s" % mode).fetchone()[0] == mode.lower()
    basic_rows(conn, 10)
    conn.close()


@case("logical", "journal_mode WAL (persistent in the file header)")
def journal_wal(db):
    journal_case(db, "WAL")


@case("logical", "journal_mode DELETE (rollback journal)")
def journal_delete(db):
    journal_case(db, "DELETE")


@case("physical", "an FTS5 virtual table with its shadow tables: a rebuild cannot "
      "reproduce the shadow tables' internals row for row")
def fts5(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE docs(id INTEGER PRIMARY KEY, title TEXT);
        CREATE VIRTUAL TABLE docs_fts USING fts5(title, body);
    """)
    rng = random.Random(11)
    conn.execute("BEGIN")
    for i in range(200):
        t = words(rng, 3)
        conn.execute("INSERT INTO docs VALUES (?, ?)", (i, t))
        conn.execute("INSERT INTO docs_fts(rowid, title, body) VALUES (?, ?, ?)",
                     (i, t, words(rng, 30)))
    conn.execute("COMMIT")
    conn.execute("DELETE FROM docs_fts WHERE rowid % 10 = 0")
    conn.close()


@case("physical", "an index that uses an application-defined collation (registered by the "
      "writing application only): re-running CREATE INDEX without it fails")
def app_collation(db):
    conn = connect(db)
    appdefs.register(conn)
    run(conn, """
        CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT);
        CREATE INDEX t_rev ON t(name COLLATE %s);
    """ % appdefs.COLLATION)
    for n in ("alpha", "Beta", "gamma", "delta", "Éclair"):
        conn.execute("INSERT INTO t(name) VALUES (?)", (n,))
    conn.close()


@case("physical", "an expression index over an application-defined function")
def app_function(db):
    conn = connect(db)
    appdefs.register(conn)
    run(conn, """
        CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT);
        CREATE INDEX t_fold ON t(%s(name));
    """ % appdefs.FUNCTION)
    for n in ("Straße", "STRASSE", "abc", "ǅ"):
        conn.execute("INSERT INTO t(name) VALUES (?)", (n,))
    conn.close()


REALS = [0.1 + 0.2, 1 / 3, 2.5, 1e-7, 123456789.12345678, 100.0, -0.0]


@case("either", "STORED generated columns over REAL->TEXT: SQLite 3.40 stores '0.3' for "
      "0.1+0.2 where 3.54 computes '0.30000000000000004'; logical only if exact")
def real_text_stored(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE t(id INTEGER PRIMARY KEY, r REAL,
                       s TEXT AS (CAST(r AS TEXT)) STORED,
                       c TEXT AS (r || '') STORED);
    """)
    for r in REALS:
        conn.execute("INSERT INTO t(r) VALUES (?)", (r,))
    assert conn.execute("SELECT s FROM t WHERE id = 1").fetchone()[0] == "0.3"
    conn.close()


@case("either", "expression indexes over REAL->TEXT: a rebuild by another SQLite stores "
      "index keys the writer's SQLite does not find; logical only if exact")
def real_text_expr_index(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE t(id INTEGER PRIMARY KEY, r REAL);
        CREATE INDEX t_cast ON t(CAST(r AS TEXT));
        CREATE INDEX t_concat ON t((r || ''));
    """)
    for r in REALS:
        conn.execute("INSERT INTO t(r) VALUES (?)", (r,))
    conn.close()


@case("either", "a partial index whose predicate formats a REAL as TEXT: the set of rows "
      "in the index depends on the SQLite that built it; logical only if exact")
def real_text_partial_index(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE t(id INTEGER PRIMARY KEY, r REAL, x TEXT);
        CREATE INDEX t_p ON t(x) WHERE CAST(r AS TEXT) = '0.3';
    """)
    for i, r in enumerate(REALS):
        conn.execute("INSERT INTO t(r, x) VALUES (?, ?)", (r, "x%d" % i))
    conn.close()


@case("logical", "a live WAL: while the backup runs, a writer holds the database open "
      "with committed transactions that are only in its -wal (never checkpointed)",
      live_writer=True)
def live_wal(db):
    conn = connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    basic_rows(conn, 12)
    conn.close()


@case("logical", "a freelist: many rows deleted without VACUUM")
def freelist(db):
    conn = connect(db)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT); CREATE INDEX t_s ON t(s);")
    rng = random.Random(13)
    conn.execute("BEGIN")
    for _ in range(2000):
        conn.execute("INSERT INTO t(s) VALUES (?)", (words(rng, 40),))
    conn.execute("COMMIT")
    conn.execute("DELETE FROM t WHERE id % 5 <> 0")
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] > 50
    conn.close()


@case("logical", "a schema with a history: ADD/RENAME/DROP COLUMN, RENAME TABLE, dropped "
      "tables, a view created before the table it reads, comments and odd spacing kept in "
      "the SQL; sqlite_schema order is not creation order of the current names")
def schema_history(db):
    conn = connect(db)
    run(conn, """
        CREATE TABLE   t1 (  a INTEGER  -- the key
                          , b TEXT /* block */ );
        CREATE TABLE dropme(x);
        CREATE INDEX t1_b ON t1(b);
        INSERT INTO t1 VALUES (1, 'one'), (2, 'two');
        ALTER TABLE t1 ADD COLUMN c TEXT DEFAULT 'dflt';
        ALTER TABLE t1 ADD COLUMN "d" REAL;
        ALTER TABLE t1 RENAME COLUMN b TO bee;
        ALTER TABLE t1 DROP COLUMN d;
        DROP TABLE dropme;
        CREATE VIEW early AS SELECT * FROM later;
        CREATE TABLE later(v INTEGER);
        INSERT INTO later VALUES (10), (20);
        ALTER TABLE t1 RENAME TO renamed;
        CREATE TABLE IF NOT EXISTS "Quoted" ("Id" INTEGER NOT NULL CONSTRAINT "PK_Quoted"
          PRIMARY KEY AUTOINCREMENT, "Name" TEXT NULL);
        INSERT INTO "Quoted"("Name") VALUES ('q');
        ALTER TABLE "Quoted" ADD "Extra" TEXT NOT NULL DEFAULT '';
    """)
    conn.close()


@case("logical", "large values that span many overflow pages: 300 KB text, 1 MB blob, "
      "zeroblob")
def overflow_values(db):
    conn = connect(db)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, b BLOB);")
    rng = random.Random(14)
    conn.execute("INSERT INTO t(s, b) VALUES (?, ?)", (words(rng, 50000), rng.randbytes(1 << 20)))
    conn.execute("INSERT INTO t(s, b) VALUES ('small', zeroblob(70000))")
    conn.close()


# --- a Jellyfin 10.11 database as a running server leaves it -----------------------------

def jellyfin_fill(conn, rng):
    """A few thousand plausible rows in Jellyfin 10.11's own schema, orphans included."""
    def iso(day, sec=0):
        return "2025-%02d-%02d %02d:%02d:%02d.%07d" % (
            1 + day // 28 % 12, 1 + day % 28, sec // 3600 % 24, sec // 60 % 60, sec % 60,
            rng.randint(0, 9999999))

    users = []
    for name in ("admin", "family", "guest"):
        uid = guid(rng)
        users.append(uid)
        conn.execute(
            'INSERT INTO "Users" ("Id", "AudioLanguagePreference", "AuthenticationProviderId",'
            ' "DisplayCollectionsView", "DisplayMissingEpisodes", "EnableAutoLogin",'
            ' "EnableLocalPassword", "EnableNextEpisodeAutoPlay", "EnableUserPreferenceAccess",'
            ' "HidePlayedInLatest", "InternalId", "InvalidLoginAttemptCount", "LastActivityDate",'
            ' "LastLoginDate", "MaxActiveSessions", "MustUpdatePassword", "Password",'
            ' "PasswordResetProviderId", "PlayDefaultAudioTrack", "RememberAudioSelections",'
            ' "RememberSubtitleSelections", "RowVersion", "SubtitleMode", "SyncPlayAccess",'
            ' "Username") VALUES (?, ?, ?, 0, 0, 0, 0, 1, 1, 1, ?, 0, ?, ?, 0, 0, ?, ?, 1, 1,'
            ' 1, 0, 0, 0, ?)',
            (uid, rng.choice([None, "eng", "fre"]),
             "Jellyfin.Server.Implementations.Users.DefaultAuthenticationProvider",
             len(users), iso(rng.randint(0, 300)), iso(rng.randint(0, 300)),
             "$PBKDF2-SHA512$iterations=210000$%032X$%0128X" % (
                 rng.getrandbits(128), rng.getrandbits(512)),
             "Jellyfin.Server.Implementations.Users.DefaultPasswordResetProvider", name))
        for kind in range(4):
            conn.execute('INSERT INTO "Permissions" ("Kind", "RowVersion", "UserId", "Value")'
                         ' VALUES (?, 0, ?, ?)', (kind, uid, rng.randint(0, 1)))
            conn.execute('INSERT INTO "Preferences" ("Kind", "RowVersion", "UserId", "Value")'
                         ' VALUES (?, 0, ?, ?)', (kind, uid, rng.choice(["", "a|b", "Movie"])))
        conn.execute(
            'INSERT INTO "DisplayPreferences" ("UserId", "Client", "ShowSidebar", '
            '"ShowBackdrop", "ScrollDirection", "SkipForwardLength", "SkipBackwardLength", '
            '"ChromecastVersion", "EnableNextVideoInfoOverlay", "ItemId") VALUES '
            '(?, \'emby\', 0, 1, 0, 30000, 10000, 0, 1, ?)', (uid, guid(rng)))

    top = guid(rng)
    items = []  # (id, type, parent)
    conn.execute('INSERT INTO "BaseItems" ("Id", "Type", "IsFolder", "IsInMixedFolder",'
                 ' "IsLocked", "IsMovie", "IsRepeat", "IsSeries", "IsVirtualItem", "Name")'
                 " VALUES (?, 'MediaBrowser.Controller.Entities.CollectionFolder', 1, 0, 0, 0,"
                 " 0, 0, 0, 'Movies')", (top,))
    for n in range(1500):
        iid = guid(rng)
        kind = rng.choice(["Movie", "Movie", "Episode", "Episode", "Audio", "Season"])
        typ = "MediaBrowser.Controller.Entities.%s" % (
            "Movies.Movie" if kind == "Movie" else "TV.%s" % kind if kind != "Audio"
            else "Audio.Audio")
        name = words(rng, rng.randint(1, 4)).title()
        path = "/media/%s/%s (%d)/%s.mkv" % (kind.lower(), name, 1950 + n % 75, name)
        conn.execute(
            'INSERT INTO "BaseItems" ("Id", "Type", "IsFolder", "IsInMixedFolder", "IsLocked",'
            ' "IsMovie", "IsRepeat", "IsSeries", "IsVirtualItem", "Name", "CleanName",'
            ' "SortName", "Path", "ParentId", "TopParentId", "CommunityRating",'
            ' "CriticRating", "DateCreated", "DateModified", "DateLastSaved",'
            ' "DateLastRefreshed", "ProductionYear", "RunTimeTicks", "Size", "Overview",'
            ' "Genres", "Studios", "OfficialRating", "MediaType", "Width", "Height",'
            ' "PresentationUniqueKey", "Data", "NormalizationGain", "LUFS", "TotalBitrate")'
            ' VALUES (?, ?, 0, 0, 0, ?, 0, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,'
            ' ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (iid, typ, int(kind == "Movie"), name, name.lower(), name.lower(), path, top, top,
             rng.choice([None, round(rng.uniform(1, 10), 1), rng.uniform(1, 10)]),
             rng.choice([None, float(rng.randint(0, 100))]), iso(n), iso(n + 3),
             iso(n + 3), iso(n + 5), 1950 + n % 75, rng.randint(1, 3) * 36_000_000_000,
             rng.randint(10 ** 8, 10 ** 10), words(rng, rng.randint(0, 60)) or None,
             "|".join(rng.sample(["Action", "Drama", "Comedy", "Sci-Fi", "Horror"], 2)),
             rng.choice(["Studio A", "Studio B|Studio C", None]),
             rng.choice(["PG", "PG-13", "R", None]), "Video" if kind != "Audio" else "Audio",
             rng.choice([1920, 3840, None]), rng.choice([1080, 2160, None]),
             iid.lower().replace("-", ""),
             json.dumps({"ProviderIds": {"Tmdb": str(rng.randint(1, 10 ** 6))}}),
             rng.choice([None, -6.5, rng.uniform(-12, 3)]),
             rng.choice([None, -14.0, rng.uniform(-30, -5)]),
             rng.randint(10 ** 6, 10 ** 8)))
        items.append(iid)
        conn.execute('INSERT INTO "AncestorIds" VALUES (?, ?)', (iid, top))
        conn.execute('INSERT INTO "BaseItemProviders" VALUES (?, ?, ?)',
                     (iid, "Tmdb", str(rng.randint(1, 10 ** 6))))
        if kind != "Season":
            for s in range(rng.randint(1, 3)):
                conn.execute(
                    'INSERT INTO "MediaStreamInfos" ("ItemId", "StreamIndex", "Codec",'
                    ' "Language", "IsDefault", "IsExternal", "IsForced", "StreamType",'
                    ' "AverageFrameRate", "RealFrameRate", "Level", "Width", "Height",'
                    ' "BitRate", "TimeBase", "Profile", "AspectRatio") VALUES (?, ?, ?, ?, ?,'
                    ' 0, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (iid, s, rng.choice(["h264", "hevc", "aac", "ac3", "subrip"]),
                     rng.choice(["eng", "ger", None]), int(s == 0), s if s < 3 else 2,
                     rng.choice([23.976025, 24.0, 29.97003, None]),
                     rng.choice([23.976025, 25.0, None]), rng.choice([40.0, 51.0, 150.0]),
                     1920, 1080, rng.randint(10 ** 5, 10 ** 7), "1/1000",
                     rng.choice(["High", "Main 10", None]), "16:9"))
        if kind == "Movie":
            for c in range(rng.randint(0, 6)):
                conn.execute('INSERT INTO "Chapters" VALUES (?, ?, ?, ?, ?, ?)',
                             (iid, c, c * 3_000_000_000, "Chapter %d" % (c + 1),
                              rng.choice([None, "/config/metadata/library/%s/chapters/%d.jpg"
                                          % (iid[:2].lower(), c)]),
                              iso(n)))
            conn.execute('INSERT INTO "BaseItemImageInfos" VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                         (guid(rng), rng.randbytes(rng.randint(20, 40)), iso(n), 1500, 0, iid,
                          "/config/metadata/library/%s/%s/poster.jpg" % (
                              iid[:2].lower(), iid.lower()), 1000))
            conn.execute('INSERT INTO "TrickplayInfos" VALUES (?, 320, 180, 10, 10, ?, 10000,'
                         ' ?)', (iid, rng.randint(50, 900), rng.randint(10000, 90000)))
        for uid in users:
            if rng.random() < 0.4:
                conn.execute(
                    'INSERT INTO "UserData" ("ItemId", "UserId", "CustomDataKey",'
                    ' "IsFavorite", "LastPlayedDate", "PlayCount", "PlaybackPositionTicks",'
                    ' "Played", "Rating", "AudioStreamIndex") VALUES (?, ?, ?, ?, ?, ?, ?, ?,'
                    ' ?, ?)',
                    (iid, uid, iid.lower().replace("-", ""), int(rng.random() < 0.1),
                     rng.choice([None, iso(rng.randint(0, 300), rng.randint(0, 86399))]),
                     rng.randint(0, 5), rng.randint(0, 10 ** 10), rng.randint(0, 1),
                     rng.choice([None, 7.5, rng.uniform(0, 10)]), rng.choice([None, 1])))
    values = []
    for typ, names in ((2, ["Action", "Drama", "Comedy", "Sci-Fi", "Horror"]),
                       (3, ["Studio A", "Studio B", "Studio C"]), (4, ["4K", "HDR", "kids"])):
        for name in names:
            vid = guid(rng)
            values.append(vid)
            conn.execute('INSERT INTO "ItemValues" VALUES (?, ?, ?, ?)',
                         (vid, typ, name, name.lower()))
    for iid in items:
        for vid in rng.sample(values, 3):
            conn.execute('INSERT INTO "ItemValuesMap" VALUES (?, ?)', (iid, vid))
    people = []
    for _ in range(400):
        pid = guid(rng)
        people.append(pid)
        conn.execute('INSERT INTO "Peoples" VALUES (?, ?, ?)',
                     (pid, words(rng, 2).title(), rng.choice(["Actor", "Director", "Writer"])))
    for iid in items[::2]:
        for order, pid in enumerate(rng.sample(people, 4)):
            conn.execute('INSERT INTO "PeopleBaseItemMap" VALUES (?, ?, ?, ?, ?)',
                         (iid, pid, order, order, rng.choice([None, words(rng, 1).title()])))
    for n in range(600):
        conn.execute(
            'INSERT INTO "ActivityLogs" ("Name", "Overview", "ShortOverview", "Type", "UserId",'
            ' "ItemId", "DateCreated", "LogSeverity", "RowVersion") VALUES (?, ?, ?, ?, ?, ?,'
            ' ?, ?, 0)',
            ("%s is playing %s" % (rng.choice(["admin", "family"]), words(rng, 2)),
             rng.choice([None, words(rng, 8)]), None,
             rng.choice(["VideoPlayback", "VideoPlaybackStopped", "SessionStarted"]),
             rng.choice(users), rng.choice([None, rng.choice(items)]), iso(n // 3, n * 97),
             rng.choice([2, 2, 2, 3])))
    for n in range(6):
        conn.execute(
            'INSERT INTO "Devices" ("UserId", "AccessToken", "AppName", "AppVersion",'
            ' "DeviceName", "DeviceId", "IsActive", "DateCreated", "DateModified",'
            ' "DateLastActivity") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (rng.choice(users), "%032x" % rng.getrandbits(128),
             rng.choice(["Jellyfin Web", "Jellyfin Android", "Infuse"]), "10.11.0",
             words(rng, 1).title(), "%032x" % rng.getrandbits(128), 1, iso(n), iso(n + 1),
             iso(n + 2)))
    conn.execute('INSERT INTO "ApiKeys" ("DateCreated", "DateLastActivity", "Name",'
                 ' "AccessToken") VALUES (?, ?, ?, ?)',
                 (iso(1), iso(2), "Home Assistant", "%032x" % rng.getrandbits(128)))
    for iid in items[:100]:
        conn.execute('INSERT INTO "MediaSegments" VALUES (?, ?, ?, ?, ?, ?)',
                     (guid(rng), rng.randint(10 ** 9, 10 ** 10), iid, "%032x" % 7, 0,
                      rng.randint(0, 4)))
        conn.execute('INSERT INTO "KeyframeData" VALUES (?, ?, ?)',
                     (iid, rng.randint(10 ** 9, 10 ** 10),
                      ",".join(str(k * 20_000_000) for k in range(rng.randint(5, 50)))))
    return items, users


@case("logical", "a Jellyfin 10.11 database in the real schema (from a real server), "
      "filled with a few thousand rows, orphans that violate foreign keys, analyzed by "
      "Debian's SQLite (stat1, no stat4), rows deleted afterwards (freelist), WAL mode: "
      "what a running Jellyfin server leaves")
def jellyfin_10_11(db):
    if not os.path.isfile(REAL_SCHEMA_DB):
        raise RuntimeError("missing %s (set JELLYSNAP_REAL_SCHEMA_DB)" % REAL_SCHEMA_DB)
    # Copied with plain I/O and opened only as the copy: it is a WAL database.
    shutil.copyfile(REAL_SCHEMA_DB, db)
    rng = random.Random(1011)
    conn = connect(db)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN")
    items, users = jellyfin_fill(conn, rng)
    conn.execute("COMMIT")
    # Items removed without the cascade (foreign keys off, as EF Core bulk deletes and
    # older migrations did): their UserData, Chapters, streams, maps stay as orphans.
    conn.execute("BEGIN")
    for iid in rng.sample(items, 40):
        conn.execute('DELETE FROM "BaseItems" WHERE "Id" = ?', (iid,))
    conn.execute('INSERT INTO "UserData" ("ItemId", "UserId", "CustomDataKey", "IsFavorite",'
                 ' "PlayCount", "PlaybackPositionTicks", "Played") VALUES (?, ?, ?, 0, 1, 0,'
                 ' 1)', (guid(rng), guid(rng), "orphan"))
    conn.execute("COMMIT")
    conn.close()
    # What Jellyfin does at shutdown and in its optimisation task, with a SQLite that has
    # no STAT4: stat1 only.
    cli(db, 'SELECT count(*) FROM "BaseItems" WHERE "Type" LIKE \'%Movie\';\n'
            'SELECT count(*) FROM "UserData" WHERE "Played" = 1;\nANALYZE;\nPRAGMA optimize;')
    conn = connect(db)
    conn.execute("BEGIN")
    conn.execute('DELETE FROM "ActivityLogs" WHERE "Id" > 560 OR "Id" % 4 = 0')
    conn.execute('DELETE FROM "PeopleBaseItemMap" WHERE "SortOrder" = 3')
    conn.execute("COMMIT")
    conn.close()
    cli(db, "PRAGMA optimize;")
    conn = connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_key_check").fetchall()
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] > 0
    t = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
    assert "sqlite_stat1" in t and "sqlite_stat4" not in t
    conn.close()


def main(argv):
    if len(argv) < 2:
        print("usage: make_dbs.py OUTDIR [CASE...]", file=sys.stderr)
        return 2
    out, only = argv[1], set(argv[2:])
    unknown = only - {c[0] for c in CASES}
    if unknown:
        print("unknown case(s): %s" % ", ".join(sorted(unknown)), file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    for name, expect, why, extra, fn in CASES:
        if only and name not in only:
            continue
        d = os.path.join(out, name)
        if os.path.exists(d):
            shutil.rmtree(d)
        os.mkdir(d)
        db = os.path.join(d, "jellyfin.db")
        fn(db)
        for side in ("-wal", "-shm", "-journal"):
            if os.path.exists(db + side):
                raise RuntimeError("%s: %s left behind" % (name, side))
        meta = dict(name=name, expect=expect, why=why, **extra)
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
