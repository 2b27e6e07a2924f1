//! `forget`: remove snapshots by name or by a keep policy.

use serde_json::json;

use jellysnap::forget::{self, Decision, Policy, Selection};
use jellysnap::select::Filter;
use jellysnap::{Access, Error, Repository};

use super::args::ForgetArgs;
use super::exit::ExitCode;
use super::{render, report_rebuild, Ctx};

/// What to remove, from the arguments, validated. Without snapshots and without keep
/// rules, the configuration file's retention is the policy (a policy is taken whole,
/// from the command line or from the file, never merged: a rule given on the command
/// line must not be widened by the file's).
fn selection(ctx: &Ctx, a: &ForgetArgs) -> Result<Selection, Error> {
    let flags = [
        a.keep_last,
        a.keep_hourly,
        a.keep_daily,
        a.keep_weekly,
        a.keep_monthly,
        a.keep_yearly,
    ];
    let from_file = match &ctx.config.config.retention {
        Some(r)
            if a.snapshots.is_empty()
                && flags.iter().all(|&n| n == 0)
                && a.keep_within.is_none()
                && a.keep_tags.is_empty() =>
        {
            Some(r)
        }
        _ => None,
    };
    let policy = match from_file {
        Some(r) => Policy {
            last: r.keep_last.unwrap_or(0),
            hourly: r.keep_hourly.unwrap_or(0),
            daily: r.keep_daily.unwrap_or(0),
            weekly: r.keep_weekly.unwrap_or(0),
            monthly: r.keep_monthly.unwrap_or(0),
            yearly: r.keep_yearly.unwrap_or(0),
            within_secs: None,
            include_named: a.include_named,
            keep_tags: Vec::new(),
            force: a.force,
        }
        .within(r.keep_within.as_ref().map(|k| k.0.as_str()))?,
        None => Policy {
            last: a.keep_last,
            hourly: a.keep_hourly,
            daily: a.keep_daily,
            weekly: a.keep_weekly,
            monthly: a.keep_monthly,
            yearly: a.keep_yearly,
            within_secs: None,
            include_named: a.include_named,
            keep_tags: a.keep_tags.clone(),
            force: a.force,
        }
        .within(a.keep_within.as_deref())?,
    };
    Ok(Selection::new(a.snapshots.clone(), policy)?)
}

pub fn forget(ctx: &Ctx, a: &ForgetArgs) -> Result<ExitCode, Error> {
    let selection = selection(ctx, a)?;
    if let Some(t) = a.keep_tags.iter().find(|t| t.is_empty()) {
        return Err(jellysnap::OptionError::Tag(t.clone()).into());
    }
    let filter = Filter::new(&a.tags, None, None)?;
    let access = if a.dry_run {
        Access::Read
    } else {
        Access::Exclusive
    };
    let repo = Repository::open_as(&ctx.place, access, "forget")?;
    report_rebuild(&repo, ctx.out);
    let (snaps, _) = repo.snapshots()?;
    // With --tag, the policy sees only the snapshots with the tag: the others are
    // neither counted nor removed.
    let snaps = filter.apply(snaps);
    let decisions = forget::select(&snaps, &selection, jellysnap::clock::now_ns())?;
    let to_remove: Vec<String> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.clone())
        .collect();
    let removed = if a.dry_run {
        0
    } else {
        forget::remove_snapshots(&repo, &snaps, &to_remove)?
    };
    ctx.out
        .json_with(|| json!({ "dry_run": a.dry_run, "decisions": decisions, "removed": removed }));
    let summary = if a.dry_run {
        format!(
            "dry run: would remove {} of {} snapshot(s)",
            to_remove.len(),
            decisions.len()
        )
    } else {
        format!("removed {removed} snapshot(s); run `jellysnap gc` to reclaim their space")
    };
    // The decisions are what a dry run exists to print: shown under -q too.
    let table = format!("{}{summary}", decisions_table(&decisions));
    if a.dry_run {
        ctx.out.data(&table);
    } else {
        ctx.out.text(&table);
    }
    Ok(ExitCode::Success)
}

fn decisions_table(decisions: &[Decision]) -> String {
    let rows: Vec<Vec<String>> = decisions
        .iter()
        .map(|d| {
            vec![
                d.id[..8].to_string(),
                d.name.clone().unwrap_or_default(),
                render::time(d.time_ns),
                if d.keep { "keep" } else { "remove" }.to_string(),
                d.reasons.join(", "),
            ]
        })
        .collect();
    render::table(&["ID", "NAME", "TIME (UTC)", "ACTION", "REASON"], &rows)
}
