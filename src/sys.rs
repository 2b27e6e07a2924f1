//! The few OS calls std does not offer. The only module allowed `unsafe`.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;

/// Flush every dirty page of the filesystem holding `f` (one call at the end of a restore
/// instead of an fsync per file).
pub fn syncfs(f: &File) -> std::io::Result<()> {
    // SAFETY: the fd is valid for the life of `f`.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Ask the kernel to start writing `f`'s dirty pages back now, without waiting, so that the
/// final sync of a restore has little left to do.
pub fn start_writeback(f: &File) {
    // SAFETY: the fd is valid for the life of `f`; offset 0 / nbytes 0 means the whole file.
    // Advisory: a failure only means the final syncfs does the work.
    let _ = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}
