//! Crash consistency without the page cache's help. A scripted history (init, backups of
//! a changing Jellyfin-shaped data dir, forget, gc) runs through the engine's API on the
//! simulated file system (`jellysnap::simulation`), which forgets whatever was not synced
//! when it crashes. The history is run once per crash point: the n-th file or index
//! operation crashes it, the crash keeps what the crash kind keeps (a kill keeps
//! everything the kernel was given; a power cut only what was synced, or that plus some
//! of the rest in order, or torn at sectors), and the repository comes back up. Then:
//! every index entry names a pack that is there, every snapshot committed before the
//! crash is listed and restores exactly, `check --read-data` finds nothing, and the
//! interrupted command (a forget or gc only half the time) and the rest of the history
//! succeed. After a kill, a power cut follows a little later, so that what a killed run
//! left half done meets the next run's fsyncs.
//!
//! `CRASHSIM_SEEDS` (default 2) sets how many seeds run every crash point; seed s
//! changes the data dir, the crash kinds and the crash's choices; `CRASHSIM_SEED=s`
//! runs (replays) seed s alone. `CRASHSIM_POINTS=n` keeps every n-th point only
//! (default 1: all). Long run:
//! `CRASHSIM_SEEDS=20 cargo test --release --features test-hooks --test crash_sim -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::fixture::{self, FixtureSpec, Layout, Rng};
use common::verify::{self, State};
use jellysnap::backup::BackupOptions;
use jellysnap::progress::NoProgress;
use jellysnap::simulation::{Crash, SimFs};
use jellysnap::{Access, Component, SourceOptions};

/// Small packs, so that the few hundred KB of the fixture make many of them.
const PACK_TARGET: u64 = 96 * 1024;

#[derive(Debug, Clone, Copy)]
enum Step {
    Init,
    /// Change the data dir (with this seed; 0: leave it), then back it up.
    Backup(u64),
    /// Forget the oldest snapshot.
    Forget,
    Gc,
}

const HISTORY: [Step; 8] = [
    Step::Init,
    Step::Backup(0),
    Step::Backup(11),
    Step::Forget,
    Step::Gc,
    Step::Backup(12),
    Step::Forget,
    Step::Gc,
];

struct World {
    _tmp: tempfile::TempDir,
    fx: fixture::Fixture,
    repo: PathBuf,
    targets: PathBuf,
    sim: SimFs,
    /// Committed snapshots, oldest first, with what each must restore to.
    committed: Vec<(String, State)>,
    /// What the backup under way would commit, and the snapshot a forget under way removes.
    in_flight: Option<State>,
    forgetting: Option<String>,
    restores: u64,
    /// The run, for messages.
    label: String,
    /// Packs deleted or repacked by gc.
    packs_gone: u64,
    /// The last step whose data change was made.
    changed_before: usize,
}

impl World {
    /// A world whose data dir is generated from `seed`.
    fn new(seed: u64) -> World {
        // On a tmpfs where there is one: restores end with a syncfs, which on a disk
        // shared with other work costs more than the rest of a run.
        let shm = std::path::Path::new("/dev/shm");
        let tmp = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let spec = FixtureSpec {
            items: 3,
            db_rows: 40,
            seed: 42 + seed,
            ..FixtureSpec::small(Layout::Docker)
        };
        let fx = fixture::generate(&tmp.path().join("jf"), &spec).unwrap();
        // The repository's objects live in the simulation; its path is real too, for the
        // scratch files of database captures and checks.
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join("tmp")).unwrap();
        std::fs::create_dir_all(tmp.path().join("targets")).unwrap();
        let sim = SimFs::new();
        sim.mkdir_durable(tmp.path());
        World {
            targets: tmp.path().join("targets"),
            _tmp: tmp,
            fx,
            repo,
            sim,
            committed: Vec::new(),
            in_flight: None,
            forgetting: None,
            restores: 0,
            changed_before: 0,
            packs_gone: 0,
            label: String::new(),
        }
    }

    fn options(&self) -> BackupOptions {
        BackupOptions {
            source: SourceOptions {
                data_dir: self.fx.data_dir.clone(),
                config_dir: None,
                metadata_dir: None,
                components: Component::ALL.into_iter().collect(),
            },
            name: None,
            tags: Vec::new(),
            create_repository: false,
        }
    }

    /// Run one step of the history, as one command.
    fn run(&mut self, step: Step) -> jellysnap::Result<()> {
        match step {
            // An init that crashed after its config was written has done its work (as
            // `backup --init`, which checks for a repository first, would find).
            Step::Init => match self.sim.init_repository(&self.repo, PACK_TARGET) {
                Err(jellysnap::Error::AlreadyInitialized { .. }) => Ok(()),
                r => r,
            },
            Step::Backup(_) => {
                let repo = self.sim.open_repository(&self.repo, Access::Write)?;
                self.in_flight = Some(verify::expected_state(&self.fx));
                let out = jellysnap::backup::backup(&repo, &self.options(), &NoProgress)?;
                assert!(!out.is_partial(), "backup: {:?}", out.record.summary.errors);
                let state = self.in_flight.take().unwrap();
                self.committed.push((out.id.to_hex(), state));
                Ok(())
            }
            Step::Forget => {
                let repo = self.sim.open_repository(&self.repo, Access::Exclusive)?;
                let id = self.committed[0].0.clone();
                self.forgetting = Some(id.clone());
                jellysnap::forget::remove(&repo, std::slice::from_ref(&id))?;
                self.committed.remove(0);
                self.forgetting = None;
                Ok(())
            }
            Step::Gc => {
                let repo = self.sim.open_repository(&self.repo, Access::Exclusive)?;
                let max = jellysnap::gc::MaxUnused::new(0.0).unwrap();
                let plan = jellysnap::gc::plan(&repo, max, &NoProgress)?;
                let done = jellysnap::gc::sweep(&repo, &plan, &NoProgress)?;
                self.packs_gone += done.packs_deleted + done.packs_repacked;
                Ok(())
            }
        }
    }

    /// Open the repository as a writer does, and close it.
    fn recover(&self) {
        if let Err(e) = self.sim.open_repository(&self.repo, Access::Write) {
            // Only an init that did not write its config leaves nothing to open.
            assert!(
                self.committed.is_empty(),
                "{}: the repository does not open: {e}",
                self.label
            );
        }
    }

    /// After a crash and a restart: what was committed is there and restores exactly,
    /// what was under way is there whole or not at all, and check finds nothing.
    fn verify(&mut self, what: &str) {
        let repo = match self.sim.open_repository(&self.repo, Access::Read) {
            Ok(r) => r,
            // An init that did not write its config: no repository yet, nothing to lose.
            Err(_) if self.committed.is_empty() && self.in_flight.is_none() => return,
            Err(e) => panic!("{what}: the repository does not open: {e}"),
        };
        let packs: Vec<_> = repo
            .packs()
            .unwrap()
            .iter()
            .filter_map(|k| k.pack_id())
            .collect();
        for p in self.sim.indexed_packs() {
            assert!(
                packs.contains(&p),
                "{what}: the index names pack {p}, which is gone"
            );
        }
        let (snaps, bad) = repo.snapshots().unwrap();
        assert!(
            bad.is_empty(),
            "{what}: unreadable snapshot records: {bad:?}"
        );
        let listed: Vec<String> = snaps.iter().map(|s| s.id.to_hex()).collect();
        if let Some(id) = self.forgetting.take() {
            if !listed.contains(&id) {
                self.committed.retain(|(c, _)| *c != id);
            }
        }
        for (id, _) in &self.committed {
            assert!(
                listed.contains(id),
                "{what}: committed snapshot {id} is gone"
            );
        }
        for id in &listed {
            if !self.committed.iter().any(|(c, _)| c == id) {
                let state = self.in_flight.take().unwrap_or_else(|| {
                    panic!("{what}: snapshot {id} was never committed by anyone")
                });
                self.committed.push((id.clone(), state));
            }
        }
        self.in_flight = None;
        let report = jellysnap::check::check(&repo, &jellysnap::check::ReadData::All, &NoProgress)
            .unwrap_or_else(|e| panic!("{what}: check failed: {e}"));
        assert!(report.ok(), "{what}: check found {:?}", report.problems);
        for snap in &snaps {
            let id = snap.id.to_hex();
            let want = &self.committed.iter().find(|(c, _)| *c == id).unwrap().1;
            self.restores += 1;
            let target = self.targets.join(self.restores.to_string());
            let opts = jellysnap::restore::RestoreOptions {
                destination: jellysnap::restore::Destination::Target(target.clone()),
                components: None,
                force: false,
                protect: Vec::new(),
                verify: false,
                server_version: None,
                include: Vec::new(),
                exclude: Vec::new(),
            };
            let plan = jellysnap::restore::plan(&repo, snap, &opts)
                .unwrap_or_else(|e| panic!("{what}: restore plan of {id}: {e}"));
            jellysnap::restore::execute(&repo, &plan, &NoProgress)
                .unwrap_or_else(|e| panic!("{what}: restore of {id}: {e}"));
            verify::assert_same(&verify::describe(&target, &[]), want);
            std::fs::remove_dir_all(&target).unwrap();
        }
    }

    /// Run the history from `from`, crashing where the simulation was told to. Returns
    /// the step that crashed, if one did.
    fn run_until_crash(&mut self, from: usize) -> Option<usize> {
        for (i, step) in HISTORY.iter().enumerate().skip(from) {
            if let Step::Backup(seed) = step {
                // The data changes once, before the first attempt.
                if *seed != 0 && self.changed_before < i {
                    fixture::day_of_changes(&self.fx, *seed).unwrap();
                    self.changed_before = i;
                }
            }
            let r = self.run(*step);
            if self.sim.crashed() {
                return Some(i);
            }
            if let Err(e) = r {
                panic!(
                    "{}: step {i} ({step:?}) failed without a crash: {e}",
                    self.label
                );
            }
        }
        None
    }
}

/// How many ops the history of `seed` takes without a crash.
fn ops_of_history(seed: u64) -> u64 {
    let mut w = World::new(seed);
    assert_eq!(w.run_until_crash(0), None);
    w.verify("the history without a crash");
    assert!(
        w.packs_gone > 0,
        "gc had nothing to do: the history tests less than it says"
    );
    w.sim.ops()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const POWER_CUTS: [Crash; 3] = [Crash::PowerCut, Crash::PowerCutInOrder, Crash::PowerCutTorn];

/// One run: crash at operation `point`, come back up, verify, go on; after a kill, a
/// power cut a few operations later.
fn run_with_crash_at(point: u64, seed: u64) -> Vec<Crash> {
    let mut rng = Rng::derive(seed, point);
    let mut w = World::new(seed);
    w.label = format!("seed {seed}, crash point {point}");
    let mut crashes = Vec::new();
    let mut next = Some((point, pick(&mut rng, true)));
    let mut from = 0;
    loop {
        if let Some((at, _)) = next {
            w.sim.crash_at(at);
        }
        let Some(step) = w.run_until_crash(from) else {
            break;
        };
        let (at, how) = next.take().unwrap();
        w.sim.crash(how, rng.next_u64());
        crashes.push(how);
        if how == Crash::Kill {
            // The next writer to open the repository makes durable what the killed run
            // left visible; until then a power cut may take back a snapshot record no
            // backup reported as committed, which the checks below would count.
            w.recover();
        }
        w.verify(&format!(
            "seed {seed}, crash {how:?} at operation {at} in step {step} ({:?})",
            HISTORY[step]
        ));
        if how == Crash::Kill {
            next = Some((w.sim.ops() + 1 + rng.below(100), pick(&mut rng, false)));
        }
        // The interrupted command runs again; a forget or gc, only half the time (the
        // next backup then meets what it left half done).
        let skip = matches!(HISTORY[step], Step::Forget | Step::Gc) && rng.below(2) == 0;
        from = step + usize::from(skip);
    }
    w.verify(&format!("seed {seed}, crash point {point}, end of history"));
    crashes
}

fn pick(rng: &mut Rng, kill: bool) -> Crash {
    let n = rng.below(if kill { 4 } else { 3 }) as usize;
    POWER_CUTS.get(n).copied().unwrap_or(Crash::Kill)
}

#[test]
fn every_crash_point_keeps_every_committed_snapshot() {
    jellysnap::set_io_threads(2);
    let seeds = match std::env::var("CRASHSIM_SEED") {
        Ok(s) => {
            let s: u64 = s.parse().expect("CRASHSIM_SEED is a number");
            s..s + 1
        }
        Err(_) => 0..env_u64("CRASHSIM_SEEDS", 2),
    };
    let every = env_u64("CRASHSIM_POINTS", 1).max(1);
    let (mut runs, mut points) = (0, Vec::new());
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for seed in seeds.clone() {
        let total = ops_of_history(seed);
        points.push(total);
        for point in (1..=total).step_by(every as usize) {
            for how in run_with_crash_at(point, seed) {
                *kinds.entry(format!("{how:?}")).or_default() += 1;
            }
            runs += 1;
        }
    }
    eprintln!(
        "crash_sim: seeds {seeds:?}, operations per history {points:?}; {runs} runs; crashes: {kinds:?}"
    );
}
