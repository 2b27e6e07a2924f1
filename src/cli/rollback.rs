//! What an in-place restore means for the Jellyfin server, as the plan tells it: the
//! version rolled back from and to, the server to start afterwards, the installed server
//! when it is newer than the snapshot's data (with the commands that install the right
//! one without starting it), and the free space Jellyfin needs to start.

use jellysnap::restore::{RestorePlan, Rollback, VersionView};

use super::render;

/// "Jellyfin 10.11.3", "a Jellyfin release in 10.11.0–10.11.6 (db)".
fn server(v: &VersionView) -> String {
    let shown = if v.exact || v.source == "log" {
        v.version.clone()
    } else {
        format!("{} (from {})", v.version, v.source.replace('+', ", "))
    };
    if v.version.contains('–') || v.version.contains(".x") || v.version.contains(' ') {
        format!("a Jellyfin release in {shown}")
    } else {
        format!("Jellyfin {shown}")
    }
}

/// The plan's lines about the server's version and the space left (each with its leading
/// newline).
pub fn plan_lines(plan: &RestorePlan, dry_run: bool) -> String {
    let mut t = String::new();
    if let Some(r) = &plan.rollback {
        t.push_str("\n  ");
        t.push_str(&meaning(r));
    }
    if let Some(s) = &plan.space {
        t.push_str(&format!(
            "\n  the data dir's file system keeps {} free afterwards ({} free now, {} freed, {} written); Jellyfin needs {} to start",
            render::size(s.free_after),
            render::size(s.free_now),
            render::size(s.frees),
            render::size(s.writes),
            render::size(s.needed)
        ));
        if !s.enough() && dry_run {
            t.push_str("\n  the restore would be refused (exit code 24) unless --force: free space there first");
        }
    }
    t
}

/// "rolls the data back from 10.11.4 to 10.11.3; start Jellyfin 10.11.3 afterwards
/// (10.11.4 would migrate it again)".
fn meaning(r: &Rollback) -> String {
    let Some(snap) = &r.snapshot else {
        return "the snapshot does not record which Jellyfin version its data is of".into();
    };
    let start = server(snap);
    match (&r.live, r.direction) {
        (Some(live), "back") => format!(
            "rolls the data back from {} to {}; start {start} afterwards ({} would migrate it again)",
            live.version, snap.version, live.version
        ),
        (Some(live), "forward") => format!(
            "rolls the data forward from {} to {}; start {start} afterwards",
            live.version, snap.version
        ),
        (Some(_), "same") => format!(
            "the data stays at Jellyfin {}; start {start} afterwards",
            snap.version
        ),
        (Some(live), _) => format!(
            "the data goes from Jellyfin {} to {}; start {start} afterwards",
            live.version, snap.version
        ),
        (None, _) => format!(
            "the snapshot's data is of Jellyfin {} (which version last ran on the live data cannot be told); start {start} afterwards",
            snap.version
        ),
    }
}

/// The warning when the installed server is newer than the snapshot's data, with what to
/// run; `None` when it is not (or cannot be told).
pub fn installed_warning(r: &Rollback) -> Option<String> {
    let (true, Some(installed), Some(snap), Some(install)) =
        (r.installed_newer, &r.installed, &r.snapshot, &r.install)
    else {
        return None;
    };
    let mut w = match (&installed.package, &installed.package_version) {
        (Some(package), Some(full)) => format!(
            "the installed Jellyfin is {} ({package} {full}), newer than the snapshot's data ({}): started on the restored data it would migrate it again. Install the snapshot's version first, and keep the package from starting it before the data is back:\n\
             \x20 echo DISABLE_JELLYFIN_AUTOSTART=1 | sudo tee -a /etc/default/jellyfin\n\
             \x20 apt-cache policy jellyfin-server      # the versions the repositories offer\n\
             \x20 sudo apt-get install --allow-downgrades jellyfin-server={install} jellyfin-web={install}\n\
             then restore, remove the DISABLE_JELLYFIN_AUTOSTART line from /etc/default/jellyfin and start Jellyfin",
            installed.version, snap.version
        ),
        _ => format!(
            "the server given is Jellyfin {}, newer than the snapshot's data ({}): started on the restored data it would migrate it again. Pin the image to the snapshot's version (jellyfin/jellyfin:{install}) and start the container only after the restore",
            installed.version, snap.version
        ),
    };
    if !snap.exact && snap.source != "log" {
        w.push_str(&format!(
            " ({install} is the newest release the snapshot's data allows: {})",
            snap.version
        ));
    }
    Some(w)
}
