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
    let mut steps: Vec<(&str, f64)> = Vec::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        steps.push((name, t.elapsed().as_secs_f64()));
    };

    let mut copy = None;
    time("physical capture (backup API copy)", &mut || {
        copy = Some(database::capture(&db, scratch.path()).expect("capture"))
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
    time("observe the copy (rows + integrity_check)", &mut || {
        source = Some(database::observe_file(&copy).expect("observe"));
        database::remove_side_files(&copy);
    });
    let rebuilt = scratch.path().join("rebuilt.db");
    time("rebuild the dump", &mut || {
        let mut f = std::io::BufReader::new(std::fs::File::open(&dump.file).expect("dump file"));
        database::rebuild(&mut f, &rebuilt).expect("rebuild");
    });
    let mut again = None;
    time("observe the rebuild", &mut || {
        again = Some(database::observe_file(&rebuilt).expect("observe"));
        database::remove_side_files(&rebuilt);
    });
    let (source, again): (database::Observation, database::Observation) =
        (source.expect("source"), again.expect("rebuilt"));
    assert!(source.difference(&again).is_none(), "the rebuild differs");

    time(
        "dump + proof as a backup runs them",
        &mut || match database::dump_and_prove(&copy, scratch.path(), None).expect("prove") {
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
        &mut || match database::dump_and_prove(&copy, scratch.path(), Some(&earlier))
            .expect("prove")
        {
            database::Logical::Exact {
                proof_reused: true, ..
            } => {}
            _ => panic!("the earlier proof was not reused"),
        },
    );
    let base = steps[0].1;
    println!(
        "database {} MB ({} tables), SQLite {}",
        size / 1_000_000,
        source.tables.len(),
        database::sqlite_version()
    );
    for (name, secs) in &steps {
        println!("  {name:<44} {secs:>8.2} s  {:>6.1}x", secs / base);
    }
    let proof: f64 = steps[2..5].iter().map(|s| s.1).sum();
    println!(
        "  {:<44} {proof:>8.2} s  {:>6.1}x",
        "proof, steps one after the other",
        proof / base
    );
}
