//! Fault injection for tests, through the I/O seams every repository write and source
//! read passes: `JELLYSNAP_FAULT=<op>:<n>[:<errno>]` makes the n-th operation of kind `op`
//! in this process fail with `errno` (default 5, EIO; 28 is ENOSPC). Ops: `write`
//! (bytes written to a repository file), `fsync` (a repository file or directory sync),
//! `read` (opening a source file for reading). Unset in normal use: one cached lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Write = 0,
    Fsync = 1,
    Read = 2,
}

struct Plan {
    op: Op,
    nth: u64,
    errno: i32,
}

static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
static COUNTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

fn plan() -> Option<&'static Plan> {
    PLAN.get_or_init(|| {
        let v = std::env::var("JELLYSNAP_FAULT").ok()?;
        let mut parts = v.split(':');
        let op = match parts.next()? {
            "write" => Op::Write,
            "fsync" => Op::Fsync,
            "read" => Op::Read,
            _ => return None,
        };
        let nth = parts.next()?.parse().ok()?;
        let errno = parts.next().and_then(|e| e.parse().ok()).unwrap_or(5);
        Some(Plan { op, nth, errno })
    })
    .as_ref()
}

/// Count one operation of kind `op`; fails when it is the planned one.
pub fn check(op: Op) -> std::io::Result<()> {
    let Some(p) = plan() else { return Ok(()) };
    if p.op != op {
        return Ok(());
    }
    let n = COUNTS[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
    if n == p.nth {
        Err(std::io::Error::from_raw_os_error(p.errno))
    } else {
        Ok(())
    }
}
