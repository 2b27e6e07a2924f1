//! Progress on stderr (only on a terminal) and warnings. One line, drawn by indicatif
//! from what [`render`] makes of the phase: done out of the total, the rate and the time
//! left, fitted to the terminal's width (the least useful parts go first), so that it
//! never wraps; cleared when the command ends, leaving nothing behind. A total still
//! being counted (a backup's, counted ahead of its walk) is marked `≥`, an estimate
//! (the parent snapshot's size, until that count gets past it) `~`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use jellysnap::progress::Progress;

use super::render;

/// How often the line is rendered again as bytes come in.
const REDRAW: Duration = Duration::from_millis(100);

pub struct TermProgress {
    /// Whether to draw at all (a terminal, neither `-q` nor `--json`).
    enabled: bool,
    state: Mutex<State>,
    verbose: bool,
    quiet: bool,
    warnings: Mutex<u64>,
}

/// The phase under way.
struct State {
    bar: Option<ProgressBar>,
    phase: String,
    done: u64,
    total: Option<u64>,
    files: Option<(u64, Option<u64>)>,
    /// How sure `total` and the files' total are.
    mark: Mark,
    /// The files and bytes expected before any count, while they are more than counted.
    estimate: Option<(u64, u64)>,
    started: Instant,
    drawn: Option<Instant>,
}

/// What the line shows at one moment.
pub(crate) struct Line<'a> {
    pub(crate) phase: &'a str,
    pub(crate) done: u64,
    pub(crate) total: Option<u64>,
    /// Files gone through, and how many are expected.
    pub(crate) files: Option<(u64, Option<u64>)>,
    pub(crate) mark: Mark,
    pub(crate) elapsed: Duration,
}

/// How sure the totals of a line are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Exact,
    /// Counted so far, not yet all: they can only grow.
    AtLeast,
    /// An estimate.
    About,
}

impl Mark {
    fn prefix(self) -> &'static str {
        match self {
            Mark::Exact => "",
            Mark::AtLeast => "≥",
            Mark::About => "~",
        }
    }
}

/// `d` as `1h02m`, `3m05s` or `42s`.
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The line for `l`, at most `width` columns: the phase, a bar, the percentage, bytes
/// done out of the total, the rate, files done out of theirs and the time left. What
/// does not fit goes, the bar first, then the rate, the byte counts, the file counts
/// and the time left; the phase is cut last.
pub(crate) fn render(l: &Line, width: usize) -> String {
    let secs = l.elapsed.as_secs_f64();
    let rate = (secs > 0.5).then(|| l.done as f64 / secs);
    let rate_s = rate.map(|r| format!("{}/s", render::size(r as u64)));
    let mut parts: Vec<(u8, String)> = Vec::new();
    let at_least = l.mark.prefix();
    // A total that turns out short (an estimate, or a count behind the work) is dropped
    // rather than shown as 100%.
    let files = l.files.map(|(n, of)| match of {
        Some(of) if n <= of => (3, format!("{n}/{at_least}{of} files")),
        _ => (3, format!("{n} files")),
    });
    let total = l.total.filter(|t| *t > 0 && l.done <= *t);
    match total {
        Some(total) => {
            let done = l.done.min(total);
            let pct = done * 100 / total;
            parts.push((5, format!("{pct:>3}%")));
            parts.push((
                2,
                format!("{}/{at_least}{}", render::size(done), render::size(total)),
            ));
            if let Some(r) = rate_s {
                parts.push((1, r));
            }
            let left = match rate {
                Some(r) if r > 0.0 => format!(
                    "ETA {}",
                    duration(Duration::from_secs_f64((total - done) as f64 / r))
                ),
                _ => "ETA --".to_string(),
            };
            parts.extend(files);
            // While the totals are not sure, the files counts say more than a time left
            // taken from them.
            parts.push((if l.mark == Mark::Exact { 4 } else { 2 }, left));
        }
        // Nothing done yet (waiting for a lock, a phase without bytes): the phase alone
        // (the line is drawn again only as work comes in, so a time would stand still).
        _ if l.done == 0 && l.files.is_none() => {}
        _ => {
            parts.extend(files);
            parts.push((3, render::size(l.done)));
            if let Some(r) = rate_s {
                parts.push((1, r));
            }
            parts.push((2, duration(l.elapsed)));
        }
    }
    let fits = |parts: &[(u8, String)], bar: usize| {
        l.phase.chars().count()
            + parts
                .iter()
                .map(|(_, s)| s.chars().count() + 1)
                .sum::<usize>()
            + bar
            <= width
    };
    // A bar of at least 10 columns, when there is a total and room for it.
    const BAR: usize = 12;
    let bar = total.filter(|_| fits(&parts, BAR + 1)).map(|t| {
        let inner = BAR - 2;
        let filled = (l.done.min(t) as f64 / t as f64 * inner as f64) as usize;
        format!("[{}{}]", "=".repeat(filled), " ".repeat(inner - filled))
    });
    while !fits(&parts, 0) && parts.len() > 1 {
        let least = parts
            .iter()
            .enumerate()
            .min_by_key(|(_, (p, _))| *p)
            .map(|(i, _)| i)
            .unwrap_or(0);
        parts.remove(least);
    }
    let mut line = l.phase.to_string();
    if let Some(b) = bar {
        line.push(' ');
        line.push_str(&b);
    }
    for (_, p) in &parts {
        line.push(' ');
        line.push_str(p);
    }
    if line.chars().count() > width {
        line = line.chars().take(width).collect();
    }
    line
}

impl TermProgress {
    pub fn new(quiet: bool, json: bool, verbose: bool) -> Self {
        TermProgress {
            enabled: !quiet && !json && std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                bar: None,
                phase: String::new(),
                done: 0,
                total: None,
                files: None,
                mark: Mark::Exact,
                estimate: None,
                started: Instant::now(),
                drawn: None,
            }),
            verbose,
            quiet,
            warnings: Mutex::new(0),
        }
    }

    fn say(&self, msg: &str) {
        let bar = self.state.lock().ok().and_then(|s| s.bar.clone());
        match bar {
            Some(b) => b.println(msg),
            None => super::out::err_line(msg),
        }
    }

    fn show_totals(state: &mut State, files: u64, bytes: u64, mark: Mark) {
        let done = state.files.map_or(0, |f| f.0);
        state.files = Some((done, Some(files)));
        state.total = Some(bytes);
        state.mark = mark;
    }

    /// Draw the line again (at most every [`REDRAW`] unless `now`).
    fn draw(state: &mut State, now: bool) {
        let Some(bar) = &state.bar else { return };
        if !now && state.drawn.is_some_and(|d| d.elapsed() < REDRAW) {
            return;
        }
        state.drawn = Some(Instant::now());
        // One column short of the width: a line that fills the last column wraps on
        // some terminals.
        let width = jellysnap::system::terminal_width().unwrap_or(80) as usize;
        bar.set_message(render(
            &Line {
                phase: &state.phase,
                done: state.done,
                total: state.total,
                files: state.files,
                mark: state.mark,
                elapsed: state.started.elapsed(),
            },
            width.saturating_sub(1).max(10),
        ));
    }
}

impl Progress for TermProgress {
    fn phase(&self, name: &str, total: Option<u64>) {
        if !self.enabled {
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        if s.bar.is_none() {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            s.bar = Some(b);
        }
        s.phase = name.to_string();
        s.done = 0;
        s.total = total;
        s.files = None;
        s.mark = Mark::Exact;
        s.estimate = None;
        s.started = Instant::now();
        Self::draw(&mut s, true);
    }

    fn advance(&self, bytes: u64) {
        if !self.enabled {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.done += bytes;
            Self::draw(&mut s, false);
        }
    }

    fn shows_totals(&self) -> bool {
        self.enabled
    }

    fn estimate(&self, files: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.estimate = Some((files, bytes));
            Self::show_totals(&mut s, files, bytes, Mark::About);
        }
    }

    fn totals(&self, files: u64, bytes: u64, counting: bool) {
        if !self.enabled {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            match s.estimate {
                // The count has not got as far as the estimate yet: it stands.
                Some((_, more)) if counting && more > bytes => return,
                _ => s.estimate = None,
            }
            let mark = if counting { Mark::AtLeast } else { Mark::Exact };
            Self::show_totals(&mut s, files, bytes, mark);
            // The final count is drawn at once: the work may bring no redraw for a while.
            Self::draw(&mut s, !counting);
        }
    }

    fn file_done(&self) {
        if !self.enabled {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            let (n, of) = s.files.unwrap_or((0, None));
            s.files = Some((n + 1, of));
            Self::draw(&mut s, false);
        }
    }

    fn warn(&self, message: &str) {
        if let Ok(mut n) = self.warnings.lock() {
            *n += 1;
        }
        if !self.quiet {
            self.say(&format!("warning: {message}"));
        }
    }

    fn info(&self, message: &str) {
        if self.verbose {
            self.say(message);
        }
    }

    /// Clear the line; a later phase starts a new one.
    fn finish(&self) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(b) = s.bar.take() {
                b.finish_and_clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(done: u64, total: Option<u64>, secs: u64) -> Line<'static> {
        Line {
            phase: "restoring files",
            done,
            total,
            files: None,
            mark: Mark::Exact,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_line_with_a_total_shows_done_total_rate_and_time_left_within_80_columns() {
        let l = line(300 << 20, Some(1200 << 20), 10);
        let s = render(&l, 79);
        assert!(s.chars().count() <= 79, "{s}");
        assert!(!s.starts_with(' '), "{s:?}");
        assert!(s.starts_with("restoring files ["), "{s}");
        assert!(s.contains(" 25%"), "{s}");
        assert!(s.contains("300.0 MiB/1.2 GiB"), "{s}");
        assert!(s.contains("30.0 MiB/s"), "{s}");
        assert!(s.contains("ETA 30s"), "{s}");
    }

    #[test]
    fn a_narrow_terminal_drops_the_bar_and_the_rate_first() {
        let l = line(300 << 20, Some(1200 << 20), 10);
        let s = render(&l, 39);
        assert!(s.chars().count() <= 39, "{s}");
        assert!(!s.contains('['), "{s}");
        assert!(s.contains(" 25%") && s.contains("ETA 30s"), "{s}");
        assert!(!s.contains("/s"), "{s}");
        // Narrower still, the phase and the percentage are what is left.
        let s = render(&l, 20);
        assert!(s.chars().count() <= 20, "{s}");
        assert!(s.starts_with("restoring files"), "{s}");
    }

    #[test]
    fn without_a_total_it_shows_bytes_rate_and_time_spent() {
        let s = render(&line(5 << 20, None, 65), 79);
        assert_eq!(s, "restoring files 5.0 MiB 78.8 KiB/s 1m05s");
        let s = render(&line(5 << 20, None, 65), 39);
        assert!(s.chars().count() <= 39, "{s}");
    }

    #[test]
    fn a_backup_shows_files_out_of_the_total_and_keeps_them_at_40_columns() {
        let mut l = line(300 << 20, Some(1200 << 20), 10);
        l.phase = "backing up";
        l.files = Some((1234, Some(5000)));
        let s = render(&l, 79);
        assert_eq!(
            s,
            "backing up  25% 300.0 MiB/1.2 GiB 30.0 MiB/s 1234/5000 files ETA 30s"
        );
        let s = render(&l, 39);
        assert_eq!(s, "backing up  25% 1234/5000 files ETA 30s");
    }

    /// A backup's line: 300 MiB and 1234 files done in 10 s, out of `total` bytes and
    /// `files` files, as sure as `mark` says.
    fn backing_up(total: Option<u64>, files: Option<u64>, mark: Mark) -> Line<'static> {
        Line {
            phase: "backing up",
            done: 300 << 20,
            total,
            files: Some((1234, files)),
            mark,
            elapsed: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_total_still_being_counted_is_marked_and_the_count_outlasts_the_time_left() {
        let l = backing_up(Some(1200 << 20), Some(5000), Mark::AtLeast);
        assert_eq!(
            render(&l, 79),
            "backing up  25% 300.0 MiB/≥1.2 GiB 30.0 MiB/s 1234/≥5000 files ETA 30s"
        );
        assert_eq!(render(&l, 39), "backing up  25% 1234/≥5000 files");
    }

    #[test]
    fn an_estimate_is_marked_as_one() {
        let l = backing_up(Some(1200 << 20), Some(5000), Mark::About);
        assert_eq!(
            render(&l, 79),
            "backing up  25% 300.0 MiB/~1.2 GiB 30.0 MiB/s 1234/~5000 files ETA 30s"
        );
        assert_eq!(render(&l, 39), "backing up  25% 1234/~5000 files");
    }

    #[test]
    fn a_total_counted_to_the_end_is_shown_plain_with_the_time_left() {
        let l = backing_up(Some(1200 << 20), Some(5000), Mark::Exact);
        let s = render(&l, 79);
        assert_eq!(
            s,
            "backing up  25% 300.0 MiB/1.2 GiB 30.0 MiB/s 1234/5000 files ETA 30s"
        );
        assert!(!s.contains('≥'), "{s}");
        assert_eq!(render(&l, 39), "backing up  25% 1234/5000 files ETA 30s");
    }

    #[test]
    fn before_any_total_is_counted_a_backup_shows_what_it_did_and_the_time_spent() {
        let l = backing_up(None, None, Mark::AtLeast);
        assert_eq!(
            render(&l, 79),
            "backing up 1234 files 300.0 MiB 30.0 MiB/s 10s"
        );
        assert_eq!(render(&l, 39), "backing up 1234 files 300.0 MiB 10s");
    }

    #[test]
    fn a_count_behind_the_work_shows_no_total() {
        // The walk can get ahead of the count (files reused from the parent snapshot
        // cost it a stat, as they cost the count): no total rather than 100%.
        let l = backing_up(Some(200 << 20), Some(1000), Mark::AtLeast);
        assert_eq!(
            render(&l, 79),
            "backing up 1234 files 300.0 MiB 30.0 MiB/s 10s"
        );
        assert!(render(&l, 39).chars().count() <= 39);
    }

    #[test]
    fn an_estimate_stands_until_the_count_gets_past_it_or_ends() {
        let p = TermProgress {
            enabled: true,
            ..TermProgress::new(false, false, false)
        };
        let shown = |p: &TermProgress| {
            let s = p.state.lock().unwrap();
            (s.files.and_then(|f| f.1), s.total, s.mark)
        };
        p.phase("backing up", None);
        p.estimate(5000, 1 << 30);
        assert_eq!(shown(&p), (Some(5000), Some(1 << 30), Mark::About));
        p.totals(100, 10 << 20, true);
        assert_eq!(shown(&p), (Some(5000), Some(1 << 30), Mark::About));
        p.totals(6000, 2 << 30, true);
        assert_eq!(shown(&p), (Some(6000), Some(2 << 30), Mark::AtLeast));
        p.totals(6100, 3 << 30, false);
        assert_eq!(shown(&p), (Some(6100), Some(3 << 30), Mark::Exact));
        // A count that ends short of the estimate is what there is.
        p.phase("backing up", None);
        p.estimate(5000, 1 << 30);
        p.totals(40, 1 << 20, false);
        assert_eq!(shown(&p), (Some(40), Some(1 << 20), Mark::Exact));
        p.finish();
    }

    #[test]
    fn an_estimate_that_turns_out_short_is_dropped() {
        let mut l = line(2 << 30, Some(1 << 30), 10);
        l.files = Some((12, Some(10)));
        assert_eq!(
            render(&l, 79),
            "restoring files 12 files 2.0 GiB 204.8 MiB/s 10s"
        );
    }

    #[test]
    fn a_wait_shows_what_it_waits_for() {
        let l = Line {
            phase: "waiting for the backup started at 03:00 UTC (pid 4242) to finish",
            done: 0,
            total: None,
            files: None,
            mark: Mark::Exact,
            elapsed: Duration::from_secs(75),
        };
        assert_eq!(
            render(&l, 79),
            "waiting for the backup started at 03:00 UTC (pid 4242) to finish"
        );
        assert_eq!(render(&l, 39).chars().count(), 39);
    }

    #[test]
    fn the_time_left_is_unknown_until_bytes_have_come_in() {
        let s = render(&line(0, Some(1 << 30), 0), 79);
        assert!(s.contains("  0%") && s.contains("ETA --"), "{s}");
    }
}
