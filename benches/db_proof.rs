//! What proving a logical database capture costs at backup, step by step, against the
//! physical capture alone (the online backup API copy every backup makes anyway).
//!
//!     DB_PROOF_DB=/path/to/jellyfin.db cargo bench --bench db_proof
//!
//! `benches/db.sh` generates a large Jellyfin-shaped database (`DB_MB`, `KEEP=1`) to point
//! it at. Prints one line per step with seconds and the ratio to the physical capture.
//! Drop the page cache first (`echo 3 > /proc/sys/vm/drop_caches`) for cold figures.

use std::path::PathBuf;
use std::time::Instant;

use jellysnap::database;

fn main() {
    let Some(db) = std::env::var_os("DB_PROOF_DB").map(PathBuf::from) else {
        eprintln!("db_proof: set DB_PROOF_DB to a SQLite database (see the file's header)");
        return;
    };
    let scratch = tempfile::tempdir_in(std::env::var_os("TMPDIR").unwrap_or("/var/tmp".into()))
        .expect("scratch dir");
    let size = std::fs::metadata(&db).expect("database").len();
    // Wall seconds and CPU seconds (all threads): on a busy machine the CPU time is
    // what a step costs, the wall time what it took.
    let mut steps: Vec<(&str, f64, f64)> = Vec::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut()| {
        let (t, c) = (Instant::now(), cpu_secs());
        f();
        steps.push((name, t.elapsed().as_secs_f64(), cpu_secs() - c));
    };

    let mut copy = None;
    time("physical capture (backup API copy)", &mut || {
        copy = Some(
            database::capture(&db, scratch.path(), database::PATIENCE_SERVER).expect("capture"),
        )
    });
    let copy = copy.expect("copy");
    let mut dump = None;
    time("logical dump of the copy", &mut || {
        dump = Some(
            database::dump_logical(&copy, scratch.path())
                .expect("dump")
                .expect("dumpable"),
        )
    });
    let dump: database::Dump = dump.expect("dump");
    let mut source = None;
    time("observe the copy (rows + checks)", &mut || {
        source = Some(database::observe_file(&copy).expect("observe"));
        database::remove_side_files(&copy);
    });
    let rebuilt = scratch.path().join("rebuilt.db");
    time("rebuild the dump", &mut || {
        let mut f = std::io::BufReader::new(std::fs::File::open(&**dump.file).expect("dump file"));
        database::rebuild(&mut f, &rebuilt).expect("rebuild");
    });
    let mut again = None;
    time(
        "observe the rebuild, version 1 (integrity_check)",
        &mut || {
            let v1 = database::observe_file_as(&rebuilt, 1).expect("observe");
            database::remove_side_files(&rebuilt);
            assert_eq!(v1.version, 1);
        },
    );
    time("observe the rebuild", &mut || {
        again = Some(database::observe_file(&rebuilt).expect("observe"));
        database::remove_side_files(&rebuilt);
    });
    time("observe the rebuild, on two threads", &mut || {
        let split =
            database::observe_file_split(&rebuilt, database::OBSERVATION_VERSION).expect("observe");
        database::remove_side_files(&rebuilt);
        assert_eq!(
            Some(&split),
            again.as_ref(),
            "the split observation differs"
        );
    });
    let (source, again): (database::Observation, database::Observation) =
        (source.expect("source"), again.expect("rebuilt"));
    assert!(source.difference(&again).is_none(), "the rebuild differs");

    time(
        "dump + proof as a backup runs them",
        &mut || match database::dump_and_prove(&copy, scratch.path(), None, None, &|_| {})
            .expect("prove")
        {
            database::Logical::Exact { .. } => {}
            database::Logical::Refused(why) => panic!("refused: {why}"),
        },
    );
    let earlier = database::Proven {
        dump_blake3: dump.blake3,
        digest: source.digest(),
    };
    time(
        "dump + the earlier proof of the same dump",
        &mut || match database::dump_and_prove(&copy, scratch.path(), Some(&earlier), None, &|_| {})
            .expect("prove")
        {
            database::Logical::Exact {
                rebuild: database::Rebuild::Reused,
                ..
            } => {}
            _ => panic!("the earlier proof was not reused"),
        },
    );
    // A day of use, as the next backup proves it: the proof keeps its rebuild, then
    // every table loses about 1 row in 50 and sees 1 in 50 changed, and the changed
    // copy is proven by bringing the kept rebuild up to date, then (slot emptied) whole.
    let kept_dir = scratch.path().join("rebuilds");
    let kept = database::Kept::new(&kept_dir, "db", "data");
    let first = match database::dump_and_prove(&copy, scratch.path(), None, Some(&kept), &|_| {})
        .expect("prove")
    {
        database::Logical::Exact { dump, digest, .. } => database::Proven {
            dump_blake3: dump.blake3,
            digest,
        },
        database::Logical::Refused(why) => panic!("refused: {why}"),
    };
    let changed = scratch.path().join("changed.db");
    std::fs::copy(&copy, &changed).expect("copy");
    a_day_of_use(&changed);
    let mut prove_changed = |name: &'static str, want: database::Rebuild| {
        time(name, &mut || match database::dump_and_prove(
            &changed,
            scratch.path(),
            Some(&first),
            Some(&kept),
            &|_| {},
        )
        .expect("prove")
        {
            database::Logical::Exact { rebuild, .. } => assert_eq!(rebuild, want),
            database::Logical::Refused(why) => panic!("refused: {why}"),
        })
    };
    prove_changed(
        "a day later: dump + proof, kept rebuild updated",
        database::Rebuild::Updated,
    );
    kept.clear();
    prove_changed(
        "a day later: dump + proof, rebuilt whole",
        database::Rebuild::Whole,
    );
    let base = steps[0].1;
    println!(
        "database {} MB ({} tables, {} indexes read in order), SQLite {}, observation version {}",
        size / 1_000_000,
        source.tables.len(),
        source.indexes.len(),
        database::sqlite_version(),
        source.version
    );
    println!("  {:<50} {:>8}  {:>7}  {:>8}", "step", "wall", "", "CPU");
    for (name, secs, cpu) in &steps {
        println!(
            "  {name:<50} {secs:>6.2} s  {:>6.1}x  {cpu:>6.2} s",
            secs / base
        );
    }
    let named = |n: &str| steps.iter().find(|s| s.0 == n).map_or(0.0, |s| s.2);
    let proof = named("observe the copy (rows + checks)")
        + named("rebuild the dump")
        + named("observe the rebuild");
    let gb = size as f64 / 1e9;
    println!(
        "  proof (observe the copy, rebuild, observe the rebuild): {proof:.2} CPU s, {:.1} CPU s per GB",
        proof / gb
    );
}

/// Delete about 1 row in 50 of every table with a rowid and change the first column of
/// another 1 in 50 (text gets a suffix, anything else becomes a number).
fn a_day_of_use(db: &std::path::Path) {
    let conn = rusqlite::Connection::open(db).expect("open the changed copy");
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .expect("pragma");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' AND sql NOT LIKE '%WITHOUT ROWID%'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("tables");
    for t in tables {
        let q = format!("\"{}\"", t.replace('"', "\"\""));
        let column: Option<String> = conn
            .query_row(
                "SELECT name FROM pragma_table_info(?1) WHERE pk = 0 ORDER BY cid LIMIT 1",
                [&t],
                |r| r.get(0),
            )
            .ok();
        conn.execute(&format!("DELETE FROM {q} WHERE rowid % 50 = 7"), [])
            .expect("delete");
        if let Some(c) = column {
            let c = format!("\"{}\"", c.replace('"', "\"\""));
            // Constraints may refuse a change; the rows deleted are the day then.
            let _ = conn.execute(
                &format!(
                    "UPDATE {q} SET {c} = CASE WHEN typeof({c}) = 'text' THEN {c} || ' (edited)' ELSE 42 END WHERE rowid % 50 = 11"
                ),
                [],
            );
        }
    }
}

/// CPU seconds (user + system) of this process so far, all threads, from
/// `/proc/self/stat` (in ticks of 1/100 s: Linux reports them in USER_HZ, 100).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command: state, ppid, ..., utime (the 12th), stime (the 13th).
    (ticks(11) + ticks(12)) / 100.0
}
