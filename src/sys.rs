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

/// Let malloc keep at most `n` arenas. glibc otherwise gives threads that contend for the
/// heap arenas of their own (up to eight per core), and memory freed into one is not
/// reused by the others: a restore of 300,000 small files peaked at 225 MB RSS with the
/// default, 182 MB with two arenas and 176 MB with one, for 142 MB in use at its peak.
/// Other C libraries keep their own policy.
pub fn limit_malloc_arenas(n: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive
    // count and applies to arenas made from now on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
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

/// Ask the kernel to read the file at `path` into the page cache in the background: for
/// a file about to be read whole that is likely cold. Best effort.
pub fn prefetch(path: &std::path::Path) {
    use std::os::unix::io::AsRawFd;
    // Linux reads ahead at most a few MiB per call (8 MiB measured here, whatever the
    // length asked for): the file is asked for piece by piece.
    const PIECE: i64 = 4 << 20;
    let Ok(f) = File::open(path) else {
        return;
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let mut at = 0i64;
    while at < size {
        // SAFETY: the descriptor is open for the call; the call only gives the kernel
        // advice and reads nothing into our memory.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), at, PIECE, libc::POSIX_FADV_WILLNEED);
        }
        at = at.saturating_add(PIECE);
    }
}

/// Turn `O_DIRECT` off on an open file, so that its later writes go through the page
/// cache (for a file system that accepted the flag at open but refuses such writes).
pub fn clear_direct(f: &File) -> std::io::Result<()> {
    // SAFETY: the fd is valid for the life of `f`; F_GETFL/F_SETFL take and return ints.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_DIRECT) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the start of `f` is in the page cache (see [`cached_at`]).
pub fn start_cached(f: &File) -> bool {
    cached_at(f, 0)
}

/// Whether the page of `f` holding `offset` is in the page cache, asked with `cachestat`
/// (Linux 6.5), which starts no read. `true` where the kernel cannot tell (an older
/// kernel, another architecture), so that the caller keeps reading through the cache.
/// (A read with `RWF_NOWAIT` would tell too, but it starts reading ahead into the cache
/// when the page is not there: 16 KiB a file, read twice.)
pub fn cached_at(f: &File, offset: u64) -> bool {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct CacheStat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        const SYS_CACHESTAT: libc::c_long = 451;
        let range = Range {
            off: offset / 4096 * 4096,
            len: 4096,
        };
        let mut stat = CacheStat::default();
        // SAFETY: the fd is valid for the life of `f`; both structs are the kernel's
        // layout and live for the call; flags must be 0.
        let rc = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                f.as_raw_fd(),
                &range as *const Range,
                &mut stat as *mut CacheStat,
                0u32,
            )
        };
        rc != 0 || stat.nr_cache > 0
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        let _ = (f, offset);
        true
    }
}

/// Turn `O_DIRECT` on for an open file: its reads then go from the disk into the
/// caller's buffer, not through the page cache. An error where the file system refuses.
pub fn set_direct(f: &File) -> std::io::Result<()> {
    // SAFETY: the fd is valid for the life of `f`; F_GETFL/F_SETFL take and return ints.
    let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_DIRECT) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The bytes an unprivileged writer may still use on the file system holding `path`
/// (`statvfs`: available blocks times the fragment size).
pub fn free_space(path: &std::path::Path) -> std::io::Result<u64> {
    statvfs(path).map(|st| st.f_bavail.saturating_mul(st.f_frsize))
}

/// The files (inodes) an unprivileged writer may still create on the file system holding
/// `path`; `None` when that file system does not count them (it reports 0 in all).
pub fn free_inodes(path: &std::path::Path) -> std::io::Result<Option<u64>> {
    statvfs(path).map(|st| (st.f_files > 0).then_some(st.f_favail))
}

/// Whether a write to the file system holding `path` (or its nearest existing ancestor:
/// the file that failed may be gone) that met ENOSPC met the end of its inodes rather
/// than of its bytes: none left, or fewer than 64 with bytes to spare (by the time the
/// error is reported, temp files removed since have given a few back). Free bytes alone
/// do not tell it: what failed may have needed more than is free.
pub fn out_of_inodes(path: &std::path::Path) -> bool {
    let Some(at) = path.ancestors().find(|p| p.exists()) else {
        return false;
    };
    match free_inodes(at) {
        Ok(Some(0)) => true,
        Ok(Some(n)) => n < 64 && free_space(at).is_ok_and(|f| f >= 1 << 20),
        _ => false,
    }
}

/// Whether the file system holding `path` is (all but) out of room: fewer than 64 files
/// (inodes) or 64 KiB left. What SQLite reports as a file it cannot open or write is
/// told from other causes by this, looked at just after: other writers beside it may
/// have given back a few by then.
pub fn nearly_full(path: &std::path::Path) -> bool {
    matches!(free_inodes(path), Ok(Some(n)) if n < 64)
        || free_space(path).is_ok_and(|f| f < 64 << 10)
}

fn statvfs(path: &std::path::Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `statvfs` is a C struct of integers, for which all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` outlives the call, which only writes it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// This process's effective user id (for messages about what it may see).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// A POSIX record lock held by another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockHolder {
    /// As this process sees it; `None` when the holder is outside this PID namespace
    /// (another container) or the lock belongs to an open file description.
    pub pid: Option<u32>,
    pub exclusive: bool,
}

/// Which other process, if any, holds a POSIX record lock over bytes
/// `[start, start + len)` of `f` that a write lock would conflict with. Asked with
/// `F_GETLK`, which reports the lock and never takes one. The locks of this process are
/// never reported (they never conflict with its own).
pub fn lock_holder(f: &File, start: u64, len: u64) -> std::io::Result<Option<LockHolder>> {
    let range = |v: u64| {
        libc::off_t::try_from(v).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    // SAFETY: `flock` is a C struct of integers, for which all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = range(start)?;
    fl.l_len = range(len)?;
    // SAFETY: the fd is valid for the life of `f`; F_GETLK only reads and writes `fl`,
    // which outlives the call.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    Ok(Some(LockHolder {
        pid: u32::try_from(fl.l_pid).ok().filter(|&p| p > 0),
        exclusive: fl.l_type == libc::F_WRLCK as libc::c_short,
    }))
}

/// Fill `buf` with random bytes from the OS.
pub fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(buf).is_ok() {
            return;
        }
    }
    // Fallback: time and pid mixed through blake3 (ids only need to be unique, not secret).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = blake3::Hasher::new();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let mut out = h.finalize_xof();
    out.fill(buf);
}

/// When process `pid` started, in clock ticks after boot (field 22 of `/proc/PID/stat`);
/// `None` when there is no such process. A pid is reused; a pid with its start time is not.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This process as the owner of scratch files it names: `<pid>.<start time>`.
pub fn owner_tag() -> String {
    let pid = std::process::id();
    format!("{pid}.{}", process_start(pid).unwrap_or(0))
}

/// Whether the process an [`owner_tag`] names is still running (the same process, not
/// a later one that got its pid). `None` when `tag` is not an owner tag.
pub fn owner_alive(tag: &str) -> Option<bool> {
    let (pid, start) = tag.split_once('.')?;
    let (pid, start): (u32, u64) = (pid.parse().ok()?, start.parse().ok()?);
    Some(process_start(pid) == Some(start))
}

/// Whether process `pid` is gone for sure (no such process). A process this user may not
/// signal, or whose `/proc` entry is hidden from it (`hidepid`), is not gone.
pub fn process_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks for the process and sends nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Where pids mean what they say: this boot of this machine's kernel and this process's
/// pid namespace (two containers on one machine share the boot, not the namespace; two
/// machines never share a boot id). `None` when either cannot be read.
pub fn process_space() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    Some(format!("{}:{ns}", boot.trim()))
}

/// This machine's host name, for the leases other hosts read ("" when it has none).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).into_owned()
}

/// What a stat of a file says: the fields a backup records and compares. Equal to what
/// `std::fs::symlink_metadata` / `metadata` report for the same file (the device number
/// is composed as std composes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl From<&std::fs::Metadata> for Stat {
    fn from(m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            mode: m.mode(),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
        }
    }
}

impl Stat {
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
    pub fn is_fifo(&self) -> bool {
        self.kind() == libc::S_IFIFO
    }
    pub fn is_socket(&self) -> bool {
        self.kind() == libc::S_IFSOCK
    }
    pub fn is_block_device(&self) -> bool {
        self.kind() == libc::S_IFBLK
    }
    pub fn is_char_device(&self) -> bool {
        self.kind() == libc::S_IFCHR
    }
}

/// A directory opened to list its names and stat its entries by name: each entry costs
/// a lookup of its own name, not a walk of the directory's whole path again, and the
/// listing needs no buffer of its own per directory.
pub struct DirFd(File);

/// Longest name a stat copies on the stack (Linux file systems allow 255 bytes).
const NAME_MAX: usize = 255;

impl DirFd {
    /// Open `path` (following symlinks, as listing it by path would) as a directory.
    pub fn open(path: &std::path::Path) -> std::io::Result<DirFd> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
            .map(DirFd)
    }

    /// The names in the directory, unsorted, without `.` and `..`, and the error that cut
    /// the listing short.
    pub fn names(&self) -> (Vec<std::ffi::OsString>, Option<std::io::Error>) {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut names = Vec::new();
        let failed = BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => self.read_names(&mut buf, &mut names),
            Err(_) => self.read_names(&mut Vec::new(), &mut names),
        });
        (names, failed.err())
    }

    fn read_names(
        &self,
        buf: &mut Vec<u8>,
        names: &mut Vec<std::ffi::OsString>,
    ) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        buf.resize(32 << 10, 0);
        loop {
            // SAFETY: the fd is open for the life of `self`; the kernel writes at most
            // `buf.len()` bytes into `buf`, which outlives the call.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let Some(filled) = usize::try_from(n).ok().and_then(|n| buf.get(..n)) else {
                return Err(std::io::Error::other("getdents64 returned more than asked"));
            };
            if filled.is_empty() {
                return Ok(());
            }
            // Records: d_ino u64, d_off i64, d_reclen u16, d_type u8, then the name,
            // NUL-terminated and padded to d_reclen.
            let mut rest = filled;
            while !rest.is_empty() {
                let reclen = rest
                    .get(16..18)
                    .and_then(|b| <[u8; 2]>::try_from(b).ok())
                    .map(|b| usize::from(u16::from_ne_bytes(b)))
                    .filter(|&l| l > 19 && l <= rest.len())
                    .ok_or_else(|| std::io::Error::other("a malformed directory record"))?;
                let field = rest.get(19..reclen).unwrap_or_default();
                let name = field.split(|&b| b == 0).next().unwrap_or_default();
                if name != b"." && name != b".." && !name.is_empty() {
                    names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
                }
                rest = rest.get(reclen..).unwrap_or_default();
            }
        }
    }

    /// Stat the entry `name` of this directory; `follow`: the file a symlink points to.
    pub fn stat(&self, name: &[u8], follow: bool) -> std::io::Result<Stat> {
        let mut c = [0u8; NAME_MAX + 1];
        let owned;
        let ptr = match c.get_mut(..name.len()) {
            Some(dst) if name.len() <= NAME_MAX && !name.contains(&0) => {
                dst.copy_from_slice(name);
                c.as_ptr()
            }
            _ => {
                owned = std::ffi::CString::new(name)
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
                owned.as_ptr().cast()
            }
        };
        let flags =
            libc::AT_STATX_SYNC_AS_STAT | if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
        // SAFETY: `statx` is a C struct of integers, for which all-zero is a valid value.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: the fd is open for the life of `self`, `ptr` is a NUL-terminated name
        // that outlives the call, and `st` outlives the call, which only writes it.
        let rc = unsafe {
            libc::statx(
                self.0.as_raw_fd(),
                ptr.cast(),
                flags,
                libc::STATX_BASIC_STATS,
                &mut st,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Stat {
            mode: u32::from(st.stx_mode),
            dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            nlink: u64::from(st.stx_nlink),
            uid: st.stx_uid,
            gid: st.stx_gid,
            size: st.stx_size,
            mtime: st.stx_mtime.tv_sec,
            mtime_nsec: i64::from(st.stx_mtime.tv_nsec),
            ctime: st.stx_ctime.tv_sec,
            ctime_nsec: i64::from(st.stx_ctime.tv_nsec),
        })
    }
}

/// Lower the calling thread's CPU and I/O priority (nice 10, the lowest level of the
/// best-effort I/O class), for work that should yield to the rest of the process
/// without being starved by it: the idle I/O class and nice 19 would hold it back for
/// as long as anything else on the machine is busy. Best effort: a scheduler without
/// I/O priorities ignores the second.
pub fn background_thread() {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_BE: libc::c_long = 2;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    const LOWEST_LEVEL: libc::c_long = 7;
    // SAFETY: both calls take integers only and change this thread's priority alone (a
    // thread id as the "process" of PRIO_PROCESS / IOPRIO_WHO_PROCESS names one thread).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | LOWEST_LEVEL,
        );
    }
}

/// The width in columns of the terminal on stderr, when it is one.
pub fn terminal_width() -> Option<u16> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which lives for the call.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(ws.ws_col)
}
