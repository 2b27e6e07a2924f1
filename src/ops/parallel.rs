//! The thread pool backup and restore run in. File work is bound as much by I/O latency
//! (cold stats, reads, page-cache copies) as by CPU, so the pool has several threads per
//! core: measured on 2 cores, 8 threads halved a cold backup and cut a no-change backup
//! by a third against one thread per core. The caller may set another size
//! ([`set_io_threads`]; the CLI reads `JELLYSNAP_THREADS`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The pool size the caller chose; 0 for the default.
static CHOSEN: AtomicUsize = AtomicUsize::new(0);

/// Run file work on `n` threads (1 to 256) instead of the default for this machine.
pub fn set_io_threads(n: usize) {
    CHOSEN.store(n.clamp(1, 256), Ordering::Relaxed);
}

pub fn io_threads() -> usize {
    let chosen = CHOSEN.load(Ordering::Relaxed);
    if chosen > 0 {
        return chosen;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cores * 4).clamp(4, 32)
}

/// Malloc arenas for the pool's threads: more threads than arenas share them (allocation
/// is not what they wait on), so memory one thread frees is there for the others.
const MALLOC_ARENAS: i32 = 2;

/// The stack of a thread that walks a directory tree: the walk recurses once per level
/// (with a thread's stolen work on top), and a tree may go as deep as a path can be long
/// (PATH_MAX, 4096 bytes: ~2,000 levels of one-letter names), which overflowed the
/// default 2 MiB from ~400 levels. Address space only: pages are used as the stack grows.
pub const WALK_STACK: usize = 64 << 20;

/// Run `f` inside a pool of [`io_threads`] threads (falls back to the global pool).
pub fn in_io_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    crate::sys::limit_malloc_arenas(MALLOC_ARENAS);
    match rayon::ThreadPoolBuilder::new()
        .num_threads(io_threads())
        .stack_size(WALK_STACK)
        .thread_name(|i| format!("jellysnap-io-{i}"))
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}
