//! `tag` and `name`: change a snapshot's tags or name (a new record supersedes the old
//! one, so the snapshot gets a new id; its earlier ids still find it).

use serde_json::json;

use jellysnap::edit::{self, Changes, Edited, NameChange};
use jellysnap::{Access, Error, Repository};

use super::args::{NameArgs, TagArgs};
use super::exit::ExitCode;
use super::{report_rebuild, Ctx};

pub fn tag(ctx: &Ctx, a: &TagArgs) -> Result<ExitCode, Error> {
    let changes = Changes::new(a.add.clone(), a.remove.clone(), NameChange::Keep)?;
    run(ctx, &a.snapshot, &changes, "tag")
}

pub fn name(ctx: &Ctx, a: &NameArgs) -> Result<ExitCode, Error> {
    let change = match &a.name {
        Some(n) => NameChange::Set(n.clone()),
        None => NameChange::Unset,
    };
    let changes = Changes::new(Vec::new(), Vec::new(), change)?;
    run(ctx, &a.snapshot, &changes, "name")
}

fn run(ctx: &Ctx, query: &str, changes: &Changes, command: &str) -> Result<ExitCode, Error> {
    let repo = Repository::open_as(&ctx.place, Access::Exclusive, command)?;
    report_rebuild(&repo, ctx.out);
    let e = edit::edit(&repo, query, changes, jellysnap::clock::now_ns())?;
    ctx.out.json(json!({
        "id": e.after.id.to_hex(),
        "replaces": e.changed.then(|| e.before.id.to_hex()),
        "changed": e.changed,
        "name": e.after.record.name,
        "tags": e.after.record.tags,
    }));
    ctx.out.text(&describe(&e));
    Ok(ExitCode::Success)
}

fn describe(e: &Edited) -> String {
    let r = &e.after.record;
    let name = r
        .name
        .as_deref()
        .map_or("no name".into(), |n| format!("name {n}"));
    let tags = if r.tags.is_empty() {
        "no tags".into()
    } else {
        format!("tags {}", r.tags.join(", "))
    };
    if e.changed {
        format!(
            "snapshot {} is now {} ({name}, {tags})",
            e.before.id.short(),
            e.after.id.short()
        )
    } else {
        format!("snapshot {} unchanged ({name}, {tags})", e.after.id.short())
    }
}
