//! Measures database capture/chunking strategies (docs/DATABASE.md): how many bytes a
//! deduplicating store adds per snapshot of a Jellyfin-shaped jellyfin.db after a day of
//! use, a VACUUM, both, and EF-Core-style table rebuilds; plus capture/restore speed.
//! Results and methodology: docs/DATABASE.md.
//!
//! ```text
//! cargo run --release --example db_strategies -- [--size-mb 220] [--dir DIR] [--seed N]
//!                                                 [--no-restic] [--keep]
//! # tools for benches/db.sh:
//! db_strategies --make-base PATH [--size-mb N] [--seed N]   # generate, VACUUM, a day of use
//! db_strategies --apply day|vacuum|day-vacuum|ef-rebuild|ef-rebuild-column PATH [--seed N]
//! ```
//!
//! The generated base database is cached in DIR (default /tmp/jellysnap-dbstrat) and
//! reused when its parameters match.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use jellysnap::chunking::{Chunker, ChunkerParams};
use jellysnap::database;
use rayon::prelude::*;
use rusqlite::{params, Connection, OpenFlags};

const PAGE: usize = 4096;

// ---------------------------------------------------------------------------------------
// Deterministic randomness

struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    fn guid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "his",
    "her",
    "young",
    "old",
    "world",
    "city",
    "family",
    "secret",
    "war",
    "love",
    "journey",
    "mysterious",
    "detective",
    "must",
    "find",
    "before",
    "after",
    "discovers",
    "dark",
    "past",
    "small",
    "town",
    "against",
    "time",
    "friends",
    "team",
    "survive",
    "power",
    "truth",
    "lost",
    "home",
    "struggles",
    "with",
    "new",
    "life",
    "when",
    "forced",
    "unexpected",
    "ally",
    "danger",
    "mission",
    "evil",
    "ancient",
    "kingdom",
    "future",
    "battle",
    "heart",
    "dream",
    "night",
    "story",
    "brothers",
    "sister",
    "father",
    "mother",
    "captain",
    "crew",
    "ship",
    "space",
    "planet",
    "island",
    "murder",
    "case",
    "police",
    "school",
    "teacher",
    "music",
    "band",
    "road",
    "trip",
    "comedy",
    "drama",
    "revenge",
    "escape",
    "prison",
    "hunt",
    "legend",
    "hero",
    "villain",
    "season",
    "episode",
    "documentary",
    "explores",
    "history",
    "nature",
    "wild",
    "animals",
    "ocean",
    "mountain",
    "desert",
    "winter",
    "summer",
    "storm",
    "fire",
    "ice",
    "blood",
    "gold",
    "money",
    "heist",
    "bank",
    "robbery",
    "spy",
    "agent",
    "government",
    "conspiracy",
];
const TYPES: &[&str] = &[
    "MediaBrowser.Controller.Entities.Movies.Movie",
    "MediaBrowser.Controller.Entities.TV.Episode",
    "MediaBrowser.Controller.Entities.TV.Episode",
    "MediaBrowser.Controller.Entities.TV.Episode",
    "MediaBrowser.Controller.Entities.Audio.Audio",
    "MediaBrowser.Controller.Entities.Person",
    "MediaBrowser.Controller.Entities.TV.Season",
];

fn words(r: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 7);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[r.below(WORDS.len() as u64) as usize]);
    }
    s.push('.');
    s
}

fn words_n(r: &mut Rng, lo: usize, spread: u64) -> String {
    let n = lo + r.below(spread) as usize;
    words(r, n)
}

fn date(r: &mut Rng, base: i64) -> String {
    let t = base + r.below(86_400 * 400) as i64;
    let (d, s) = (t / 86_400, t % 86_400);
    format!(
        "2025-{:02}-{:02} {:02}:{:02}:{:02}.{:07}",
        1 + (d / 28) % 12,
        1 + d % 28,
        s / 3600,
        (s / 60) % 60,
        s % 60,
        r.below(10_000_000)
    )
}

// ---------------------------------------------------------------------------------------
// The Jellyfin-shaped database

const SCHEMA: &str = r#"
CREATE TABLE "__EFMigrationsHistory" ("MigrationId" TEXT NOT NULL CONSTRAINT "PK___EFMigrationsHistory" PRIMARY KEY, "ProductVersion" TEXT NOT NULL);
CREATE TABLE "Users" ("Id" TEXT NOT NULL CONSTRAINT "PK_Users" PRIMARY KEY, "Username" TEXT NOT NULL, "Password" TEXT NULL, "InternalId" INTEGER NOT NULL, "LastActivityDate" TEXT NULL, "RowVersion" INTEGER NOT NULL);
CREATE TABLE "ActivityLogs" ("Id" INTEGER NOT NULL CONSTRAINT "PK_ActivityLogs" PRIMARY KEY AUTOINCREMENT, "Name" TEXT NOT NULL, "Overview" TEXT NULL, "ShortOverview" TEXT NULL, "Type" TEXT NOT NULL, "UserId" TEXT NOT NULL, "ItemId" TEXT NULL, "DateCreated" TEXT NOT NULL, "LogSeverity" INTEGER NOT NULL, "RowVersion" INTEGER NOT NULL);
CREATE TABLE "BaseItems" ("Id" TEXT NOT NULL CONSTRAINT "PK_BaseItems" PRIMARY KEY, "Type" TEXT NOT NULL, "Name" TEXT NULL, "SortName" TEXT NULL, "CleanName" TEXT NULL, "Path" TEXT NULL, "Overview" TEXT NULL, "Tagline" TEXT NULL, "ProviderIds" TEXT NULL, "DateCreated" TEXT NULL, "DateModified" TEXT NULL, "DateLastSaved" TEXT NULL, "DateLastRefreshed" TEXT NULL, "ProductionYear" INTEGER NULL, "RunTimeTicks" INTEGER NULL, "CommunityRating" REAL NULL, "OfficialRating" TEXT NULL, "IsFolder" INTEGER NOT NULL, "Size" INTEGER NULL, "Width" INTEGER NULL, "Height" INTEGER NULL, "ParentId" TEXT NULL, "TopParentId" TEXT NULL, "PresentationUniqueKey" TEXT NULL, "Data" TEXT NULL);
CREATE TABLE "UserData" ("ItemId" TEXT NOT NULL, "UserId" TEXT NOT NULL, "CustomDataKey" TEXT NOT NULL, "PlayCount" INTEGER NOT NULL, "Played" INTEGER NOT NULL, "IsFavorite" INTEGER NOT NULL, "PlaybackPositionTicks" INTEGER NOT NULL, "LastPlayedDate" TEXT NULL, "Rating" REAL NULL, "AudioStreamIndex" INTEGER NULL, "SubtitleStreamIndex" INTEGER NULL, "Likes" INTEGER NULL, CONSTRAINT "PK_UserData" PRIMARY KEY ("ItemId", "UserId", "CustomDataKey"), CONSTRAINT "FK_UserData_BaseItems_ItemId" FOREIGN KEY ("ItemId") REFERENCES "BaseItems" ("Id") ON DELETE CASCADE);
CREATE TABLE "MediaStreamInfos" ("ItemId" TEXT NOT NULL, "StreamIndex" INTEGER NOT NULL, "StreamType" INTEGER NOT NULL, "Codec" TEXT NULL, "Language" TEXT NULL, "ChannelLayout" TEXT NULL, "Profile" TEXT NULL, "AspectRatio" TEXT NULL, "Path" TEXT NULL, "IsInterlaced" INTEGER NOT NULL, "BitRate" INTEGER NULL, "Channels" INTEGER NULL, "SampleRate" INTEGER NULL, "IsDefault" INTEGER NOT NULL, "IsForced" INTEGER NOT NULL, "IsExternal" INTEGER NOT NULL, "Height" INTEGER NULL, "Width" INTEGER NULL, "AverageFrameRate" REAL NULL, "Level" REAL NULL, "PixelFormat" TEXT NULL, "BitDepth" INTEGER NULL, "Title" TEXT NULL, "TimeBase" TEXT NULL, CONSTRAINT "PK_MediaStreamInfos" PRIMARY KEY ("ItemId", "StreamIndex"), CONSTRAINT "FK_MediaStreamInfos_BaseItems_ItemId" FOREIGN KEY ("ItemId") REFERENCES "BaseItems" ("Id") ON DELETE CASCADE);
CREATE TABLE "ItemValues" ("ItemValueId" TEXT NOT NULL CONSTRAINT "PK_ItemValues" PRIMARY KEY, "Type" INTEGER NOT NULL, "Value" TEXT NOT NULL, "CleanValue" TEXT NOT NULL);
CREATE TABLE "ItemValuesMap" ("ItemId" TEXT NOT NULL, "ItemValueId" TEXT NOT NULL, CONSTRAINT "PK_ItemValuesMap" PRIMARY KEY ("ItemValueId", "ItemId"), CONSTRAINT "FK_ItemValuesMap_BaseItems_ItemId" FOREIGN KEY ("ItemId") REFERENCES "BaseItems" ("Id") ON DELETE CASCADE, CONSTRAINT "FK_ItemValuesMap_ItemValues_ItemValueId" FOREIGN KEY ("ItemValueId") REFERENCES "ItemValues" ("ItemValueId") ON DELETE CASCADE);
"#;

const INDEXES: &str = r#"
CREATE INDEX "IX_ActivityLogs_DateCreated" ON "ActivityLogs" ("DateCreated");
CREATE UNIQUE INDEX "IX_Users_Username" ON "Users" ("Username");
CREATE INDEX "IX_BaseItems_Path" ON "BaseItems" ("Path");
CREATE INDEX "IX_BaseItems_ParentId" ON "BaseItems" ("ParentId");
CREATE INDEX "IX_BaseItems_PresentationUniqueKey" ON "BaseItems" ("PresentationUniqueKey");
CREATE INDEX "IX_BaseItems_Type_TopParentId_PresentationUniqueKey" ON "BaseItems" ("Type", "TopParentId", "PresentationUniqueKey");
CREATE INDEX "IX_BaseItems_TopParentId_Type_SortName" ON "BaseItems" ("TopParentId", "Type", "SortName");
CREATE INDEX "IX_UserData_UserId_Played" ON "UserData" ("UserId", "Played");
CREATE INDEX "IX_UserData_UserId_IsFavorite" ON "UserData" ("UserId", "IsFavorite");
CREATE INDEX "IX_UserData_UserId_LastPlayedDate" ON "UserData" ("UserId", "LastPlayedDate");
CREATE INDEX "IX_MediaStreamInfos_StreamIndex_StreamType" ON "MediaStreamInfos" ("StreamIndex", "StreamType");
CREATE UNIQUE INDEX "IX_ItemValues_Type_CleanValue" ON "ItemValues" ("Type", "CleanValue");
CREATE INDEX "IX_ItemValuesMap_ItemId" ON "ItemValuesMap" ("ItemId");
"#;

const N_USERS: usize = 4;
const N_VALUES: usize = 6000;

struct Gen {
    users: Vec<String>,
    values: Vec<String>,
    tops: Vec<String>,
}

fn gen_meta(seed: u64) -> Gen {
    let mut r = Rng::new(seed ^ 0x5eed);
    Gen {
        users: (0..N_USERS).map(|_| r.guid()).collect(),
        values: (0..N_VALUES).map(|_| r.guid()).collect(),
        tops: (0..6).map(|_| r.guid()).collect(),
    }
}

fn insert_item(tx: &Connection, g: &Gen, r: &mut Rng) -> rusqlite::Result<()> {
    let id = r.guid();
    let ty = TYPES[r.below(TYPES.len() as u64) as usize];
    let name = words_n(r, 1, 4);
    let folder = ty.ends_with("Season");
    let path = if ty.ends_with("Person") {
        None
    } else {
        Some(format!(
            "/media/{}/{}/{}.mkv",
            r.below(500),
            name,
            r.next() % 100_000
        ))
    };
    let overview = words_n(r, 40, 200);
    let top = &g.tops[r.below(g.tops.len() as u64) as usize];
    tx.prepare_cached(
        r#"INSERT INTO "BaseItems" VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25)"#,
    )?
    .execute(params![
        id,
        ty,
        name,
        name.to_lowercase(),
        name.to_lowercase().replace(' ', ""),
        path,
        overview,
        if r.pct(30) { Some(words(r, 6)) } else { None },
        format!("Tmdb={}|Imdb=tt{:07}|Tvdb={}", r.below(900_000), r.below(9_999_999), r.below(500_000)),
        date(r, 0),
        date(r, 0),
        date(r, 0),
        date(r, 0),
        1950 + r.below(76) as i64,
        (600 + r.below(10_800) as i64) * 10_000_000,
        (r.below(100) as f64) / 10.0,
        ["PG", "PG-13", "R", "TV-MA", "TV-14"][r.below(5) as usize],
        folder,
        r.below(8_000_000_000) as i64,
        1920,
        1080,
        if r.pct(70) { Some(g.tops[r.below(6) as usize].clone()) } else { None },
        top,
        format!("{}-{}", id.to_lowercase(), r.below(1000)),
        format!(r#"{{"LockedFields":[],"ExtraIds":[],"Chapters":{},"Hash":"{:016x}"}}"#, r.below(30), r.next()),
    ])?;
    if !folder && !ty.ends_with("Person") {
        for u in &g.users {
            if r.pct(40) {
                let played = r.pct(50);
                tx.prepare_cached(
                    r#"INSERT INTO "UserData" VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"#,
                )?
                .execute(params![
                    id,
                    u,
                    format!("{}", r.below(1_000_000)),
                    i64::from(played) + r.below(3) as i64,
                    played,
                    r.pct(10),
                    if played {
                        0
                    } else {
                        r.below(50_000_000_000) as i64
                    },
                    date(r, 0),
                    if r.pct(20) {
                        Some(r.below(10) as f64)
                    } else {
                        None
                    },
                    if r.pct(50) { Some(1) } else { None },
                    if r.pct(30) { Some(2) } else { None },
                    None::<i64>,
                ])?;
            }
        }
        for s in 0..(2 + r.below(5) as i64) {
            tx.prepare_cached(r#"INSERT INTO "MediaStreamInfos" VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,0,?10,?11,?12,?13,0,0,?14,?15,?16,?17,?18,?19,?20,?21)"#)?
                .execute(params![
                    id,
                    s,
                    s.min(2),
                    ["h264", "hevc", "aac", "ac3", "subrip", "eac3"][r.below(6) as usize],
                    ["eng", "ger", "fre", "spa", "jpn"][r.below(5) as usize],
                    if s > 0 { Some("5.1") } else { None },
                    if s == 0 { Some("High") } else { None },
                    if s == 0 { Some("16:9") } else { None },
                    None::<String>,
                    r.below(20_000_000) as i64,
                    if s > 0 { Some(6) } else { None },
                    if s > 0 { Some(48000) } else { None },
                    s == 1,
                    if s == 0 { Some(1080) } else { None },
                    if s == 0 { Some(1920) } else { None },
                    if s == 0 { Some(23.976f64) } else { None },
                    if s == 0 { Some(41.0f64) } else { None },
                    if s == 0 { Some("yuv420p10le") } else { None },
                    if s == 0 { Some(10) } else { None },
                    if r.pct(30) { Some(words(r, 3)) } else { None },
                    "1/1000",
                ])?;
        }
    }
    let mut seen = HashSet::new();
    for _ in 0..(3 + r.below(6)) {
        let v = r.below(N_VALUES as u64) as usize;
        if seen.insert(v) {
            tx.prepare_cached(r#"INSERT INTO "ItemValuesMap" VALUES (?1, ?2)"#)?
                .execute(params![id, g.values[v]])?;
        }
    }
    Ok(())
}

fn page_count(conn: &Connection) -> Result<u64> {
    Ok(conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))? as u64)
}

fn generate(path: &Path, size_mb: u64, seed: u64) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA page_size = 4096;")?;
    let m: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if m != "wal" {
        bail!("no WAL");
    }
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -200000;")?;
    let g = gen_meta(0);
    let mut r = Rng::new(seed);
    {
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(INDEXES)?;
        for (i, (id, v)) in [
            ("20200514181226_AddActivityLog", "3.1.4"),
            ("20200613202153_AddUsers", "3.1.5"),
            ("20241020103111_LibraryDbMigration", "8.0.10"),
            ("20250714044826_ResetJournalMode", "9.0.7"),
            (
                "20241111131257_Jellyfin.Server.Migrations.Routines.MigrateLibraryDb",
                "10.11.0.0",
            ),
            (
                "20251109000000_Jellyfin.Server.Migrations.Routines.RefreshTrickplayInfo",
                "10.11.3.0",
            ),
        ]
        .iter()
        .enumerate()
        {
            let _ = i;
            tx.execute(
                r#"INSERT INTO "__EFMigrationsHistory" VALUES (?1, ?2)"#,
                params![id, v],
            )?;
        }
        for (k, u) in g.users.iter().enumerate() {
            tx.execute(
                r#"INSERT INTO "Users" VALUES (?1, ?2, ?3, ?4, ?5, 0)"#,
                params![
                    u,
                    format!("user{k}"),
                    format!("$PBKDF2-SHA512${:032x}", r.next()),
                    k as i64 + 1,
                    date(&mut r, 0)
                ],
            )?;
        }
        for (k, v) in g.values.iter().enumerate() {
            let name = words_n(&mut r, 1, 3);
            tx.execute(
                r#"INSERT OR IGNORE INTO "ItemValues" VALUES (?1, ?2, ?3, ?4)"#,
                params![
                    v,
                    (k % 6) as i64,
                    name,
                    format!("{}{k}", name.to_lowercase())
                ],
            )?;
        }
        tx.commit()?;
    }
    let target = size_mb * 1024 * 1024 / PAGE as u64;
    let mut n = 0u64;
    loop {
        let tx = conn.transaction()?;
        for _ in 0..2000 {
            insert_item(&tx, &g, &mut r)?;
            n += 1;
        }
        for _ in 0..40 {
            activity(&tx, &g, &mut r)?;
        }
        tx.commit()?;
        if page_count(&conn)? >= target {
            break;
        }
    }
    eprintln!("generated {n} items");
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

fn activity(tx: &Connection, g: &Gen, r: &mut Rng) -> rusqlite::Result<()> {
    tx.prepare_cached(
        r#"INSERT INTO "ActivityLogs" ("Name","Overview","ShortOverview","Type","UserId","ItemId","DateCreated","LogSeverity","RowVersion") VALUES (?1,?2,?3,?4,?5,NULL,?6,2,0)"#,
    )?
    .execute(params![
        format!("user is playing {}", words(r, 3)),
        words(r, 10),
        None::<String>,
        "VideoPlayback",
        g.users[r.below(N_USERS as u64) as usize],
        date(r, 86_400 * 400),
    ])?;
    Ok(())
}

/// Share (per mille) of UserData / BaseItems rows updated by a day of use; tuned so that
/// about 6% of the pages change.
const DAY_UD_PERMILLE: usize = 8;
const DAY_BI_PERMILLE: usize = 5;

fn all_rowids(conn: &Connection, table: &str) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare(&format!(r#"SELECT rowid FROM "{table}""#))?;
    let v = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(v)
}

/// A day of Jellyfin use: scattered UserData updates (playback), BaseItems metadata
/// refreshes, a few new and removed items, activity log entries.
fn day_of_use(path: &Path, seed: u64) -> Result<()> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = OFF;")?;
    let g = gen_meta(0);
    let mut r = Rng::new(seed);
    let ud = all_rowids(&conn, "UserData")?;
    let bi = all_rowids(&conn, "BaseItems")?;
    let tx = conn.transaction()?;
    for _ in 0..(ud.len() * DAY_UD_PERMILLE / 1000) {
        let id = ud[r.below(ud.len() as u64) as usize];
        tx.prepare_cached(r#"UPDATE "UserData" SET "PlayCount" = "PlayCount" + 1, "Played" = ?2, "PlaybackPositionTicks" = ?3, "LastPlayedDate" = ?4 WHERE rowid = ?1"#)?
            .execute(params![id, r.pct(60), r.below(50_000_000_000) as i64, date(&mut r, 86_400 * 401)])?;
    }
    for _ in 0..(bi.len() * DAY_BI_PERMILLE / 1000) {
        let id = bi[r.below(bi.len() as u64) as usize];
        let refresh = r.pct(20);
        if refresh {
            tx.prepare_cached(r#"UPDATE "BaseItems" SET "DateLastRefreshed" = ?2, "DateLastSaved" = ?2, "Overview" = ?3, "CommunityRating" = ?4 WHERE rowid = ?1"#)?
                .execute(params![id, date(&mut r, 86_400 * 401), words_n(&mut r, 40, 200), r.below(100) as f64 / 10.0])?;
        } else {
            tx.prepare_cached(r#"UPDATE "BaseItems" SET "DateLastRefreshed" = ?2, "DateLastSaved" = ?2 WHERE rowid = ?1"#)?
                .execute(params![id, date(&mut r, 86_400 * 401)])?;
        }
    }
    for _ in 0..(bi.len() / 4000) {
        let id = bi[r.below(bi.len() as u64) as usize];
        tx.execute(r#"DELETE FROM "BaseItems" WHERE rowid = ?1"#, [id])?;
    }
    // New items get fresh (random) GUIDs: they land all over the PK index.
    let mut rr = Rng::new(seed ^ 0xadd);
    for _ in 0..(bi.len() / 2000) {
        insert_item(&tx, &g, &mut rr)?;
    }
    for _ in 0..300 {
        activity(&tx, &g, &mut r)?;
    }
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

fn vacuum(path: &Path) -> Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch("VACUUM;")?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// EF Core's SQLite table rebuild (used for most ALTERs): create `ef_temp_X`, copy,
/// drop the old table, rename, recreate the indexes. With `add_column`, the new table
/// also has one more (NULL) column, as when a migration adds a column that needs a
/// rebuild.
fn ef_rebuild(path: &Path, add_column: bool) -> Result<()> {
    let conn = Connection::open(path)?;
    let sql: String = conn.query_row(
        "SELECT sql FROM sqlite_schema WHERE name = 'BaseItems'",
        [],
        |r| r.get(0),
    )?;
    let mut new_sql = sql.replacen(r#""BaseItems""#, r#""ef_temp_BaseItems""#, 1);
    if add_column {
        new_sql = new_sql.replacen(
            r#""Data" TEXT NULL"#,
            r#""Data" TEXT NULL, "InheritedParentalRatingSubValue" INTEGER NULL"#,
            1,
        );
    }
    let idx: Vec<String> = conn
        .prepare("SELECT sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'BaseItems' AND sql IS NOT NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let cols: Vec<String> = conn
        .prepare(r#"SELECT name FROM pragma_table_info('BaseItems')"#)?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    let cols = cols
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    conn.execute_batch(&format!(
        r#"PRAGMA foreign_keys = 0;
        BEGIN;
        {new_sql};
        INSERT INTO "ef_temp_BaseItems" ({cols}) SELECT {cols} FROM "BaseItems";
        DROP TABLE "BaseItems";
        ALTER TABLE "ef_temp_BaseItems" RENAME TO "BaseItems";
        {};
        COMMIT;
        PRAGMA foreign_keys = 1;"#,
        idx.join(";\n")
    ))?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Strategies

#[derive(Clone, Copy, Debug)]
enum Strategy {
    /// Fixed, page-aligned chunks over the physical copy.
    Fixed(usize),
    /// Content-defined at page granularity: cut after a page whose hash matches a mask.
    PageCdc { avg_pages: usize },
    /// FastCDC over the physical copy.
    PhysCdc(u32, u32, u32),
    /// FastCDC over the logical dump.
    LogCdc(u32, u32, u32),
}

impl Strategy {
    fn name(self) -> String {
        let k = |n: u32| format!("{}K", n / 1024);
        match self {
            Strategy::Fixed(n) => format!("physical fixed {}", k(n as u32)),
            Strategy::PageCdc { avg_pages } => {
                format!("physical page-CDC avg {}", k((avg_pages * PAGE) as u32))
            }
            Strategy::PhysCdc(a, b, c) => format!("physical FastCDC {}/{}/{}", k(a), k(b), k(c)),
            Strategy::LogCdc(a, b, c) => format!("logical FastCDC {}/{}/{}", k(a), k(b), k(c)),
        }
    }
    fn logical(self) -> bool {
        matches!(self, Strategy::LogCdc(..))
    }
    fn cuts(self, data: &[u8]) -> Vec<usize> {
        match self {
            Strategy::Fixed(n) => {
                let mut v = vec![n; data.len() / n];
                if !data.len().is_multiple_of(n) {
                    v.push(data.len() % n);
                }
                v
            }
            Strategy::PageCdc { avg_pages } => {
                let (min, max) = ((avg_pages / 4).max(1), avg_pages * 4);
                let mut out = Vec::new();
                let mut run = 0usize;
                for (i, page) in data.chunks(PAGE).enumerate() {
                    let _ = i;
                    run += 1;
                    let h = u64::from_le_bytes(
                        blake3::hash(page).as_bytes()[..8]
                            .try_into()
                            .expect("8 bytes"),
                    );
                    if (run >= min && h % avg_pages as u64 == 0) || run >= max {
                        out.push(run);
                        run = 0;
                    }
                }
                if run > 0 {
                    out.push(run);
                }
                let mut v: Vec<usize> = out.into_iter().map(|p| p * PAGE).collect();
                let total: usize = v.iter().sum();
                if total > data.len() {
                    let last = v.last_mut().expect("non-empty");
                    *last -= total - data.len();
                }
                v
            }
            Strategy::PhysCdc(min, avg, max) | Strategy::LogCdc(min, avg, max) => {
                Chunker::new(ChunkerParams { min, avg, max }).cuts(data)
            }
        }
    }
}

fn chunk_ids(s: Strategy, data: &[u8]) -> Vec<([u8; 32], usize, usize)> {
    let cuts = s.cuts(data);
    let mut spans = Vec::with_capacity(cuts.len());
    let mut pos = 0;
    for n in cuts {
        spans.push((pos, n));
        pos += n;
    }
    spans
        .par_iter()
        .map(|&(o, n)| (*blake3::hash(&data[o..o + n]).as_bytes(), o, n))
        .collect()
}

fn stored_len(chunk: &[u8]) -> u64 {
    let c = zstd::bulk::compress(chunk, 3).expect("zstd");
    // jellysnap stores compressed only when that saves at least 3%.
    if (c.len() as u64) * 100 <= (chunk.len() as u64) * 97 {
        c.len() as u64
    } else {
        chunk.len() as u64
    }
}

/// Content-defined leaves of a chunk list (a simulated two-level chunk list): a leaf ends
/// after a reference whose id, read as a number, is divisible by `LEAF_REFS`. Returns
/// (leaf hash, leaf bytes at 36 bytes per reference).
const LEAF_REFS: u64 = 64;
fn list_leaves(ids: &[([u8; 32], usize, usize)]) -> Vec<([u8; 32], u64)> {
    let mut out = Vec::new();
    let mut h = blake3::Hasher::new();
    let mut n = 0u64;
    for (id, _, len) in ids {
        h.update(id);
        h.update(&(*len as u32).to_le_bytes());
        n += 1;
        if u64::from(u32::from_le_bytes(id[..4].try_into().expect("4"))) % LEAF_REFS == 0 {
            out.push((*h.finalize().as_bytes(), n * 36));
            h = blake3::Hasher::new();
            n = 0;
        }
    }
    if n > 0 {
        out.push((*h.finalize().as_bytes(), n * 36));
    }
    out
}

/// Bytes a two-level chunk list adds: new leaves + the top list (36 bytes per leaf).
fn list_added(base: &HashSet<[u8; 32]>, ids: &[([u8; 32], usize, usize)]) -> u64 {
    let leaves = list_leaves(ids);
    let new: u64 = leaves
        .iter()
        .filter(|(h, _)| !base.contains(h))
        .map(|(_, b)| b)
        .sum();
    new + leaves.len() as u64 * 36
}

#[derive(Default, Clone, Copy)]
struct Added {
    chunks: u64,
    new_chunks: u64,
    raw: u64,
    stored: u64,
}

fn added(base: &HashSet<[u8; 32]>, ids: &[([u8; 32], usize, usize)], data: &[u8]) -> Added {
    let mut seen = HashSet::new();
    let new: Vec<(usize, usize)> = ids
        .iter()
        .filter(|(id, _, _)| !base.contains(id) && seen.insert(*id))
        .map(|&(_, o, n)| (o, n))
        .collect();
    let raw = new.iter().map(|&(_, n)| n as u64).sum();
    let stored = new
        .par_iter()
        .map(|&(o, n)| stored_len(&data[o..o + n]))
        .sum();
    Added {
        chunks: ids.len() as u64,
        new_chunks: new.len() as u64,
        raw,
        stored,
    }
}

// ---------------------------------------------------------------------------------------
// Capture + helpers

struct Captured {
    physical: Vec<u8>,
    logical: Vec<u8>,
    capture_s: f64,
    dump_s: f64,
}

fn capture_both(db: &Path, tmp: &Path) -> Result<Captured> {
    let t = Instant::now();
    let copy = database::capture(db, tmp, database::PATIENCE_SERVER)?;
    let capture_s = t.elapsed().as_secs_f64();
    let physical = fs::read(&copy)?;
    drop(copy);
    let t = Instant::now();
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut logical = Vec::with_capacity(physical.len());
    database::dump(&conn, &mut logical)?;
    let dump_s = t.elapsed().as_secs_f64();
    drop(conn);
    Ok(Captured {
        physical,
        logical,
        capture_s,
        dump_s,
    })
}

fn changed_pages(a: &[u8], b: &[u8]) -> (u64, u64) {
    let pages = b.len().div_ceil(PAGE) as u64;
    let same = a
        .chunks(PAGE)
        .zip(b.chunks(PAGE))
        .filter(|(x, y)| x == y)
        .count() as u64;
    (pages - same, pages)
}

fn du(path: &Path) -> Result<u64> {
    let out = Command::new("du").arg("-sb").arg(path).output()?;
    let s = String::from_utf8_lossy(&out.stdout);
    Ok(s.split_whitespace().next().unwrap_or("0").parse()?)
}

fn restic(repo: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("restic")
        .arg("--repo")
        .arg(repo)
        .arg("--no-cache")
        .arg("--quiet")
        .args(args)
        .env("RESTIC_PASSWORD", "jellysnap-bench")
        .output()
        .context("running restic")?;
    if !out.status.success() {
        bail!("restic {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Bytes restic adds when backing up `data` as `<dir>/jellyfin.db` after the base.
fn restic_added(work: &Path, base_repo: &Path, data: &[u8], name: &str) -> Result<u64> {
    let repo = work.join(format!("restic-{name}"));
    let _ = fs::remove_dir_all(&repo);
    let st = Command::new("cp")
        .arg("-a")
        .arg(base_repo)
        .arg(&repo)
        .status()?;
    if !st.success() {
        bail!("cp failed");
    }
    let src = work.join("restic-src");
    fs::create_dir_all(&src)?;
    fs::write(src.join("jellyfin.db"), data)?;
    let before = du(&repo)?;
    restic(
        &repo,
        &["backup", src.to_str().expect("utf-8"), "--host", "bench"],
    )?;
    let after = du(&repo)?;
    fs::remove_dir_all(&repo)?;
    Ok(after.saturating_sub(before))
}

fn mb(n: u64) -> f64 {
    n as f64 / (1024.0 * 1024.0)
}

fn main() -> Result<()> {
    let mut size_mb = 220u64;
    let mut dir = PathBuf::from("/tmp/jellysnap-dbstrat");
    let mut seed = 20251125u64;
    let mut use_restic = true;
    let mut keep = false;
    let mut make_base: Option<PathBuf> = None;
    let mut apply: Option<(String, PathBuf)> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--make-base" => make_base = Some(args.next().context("--make-base PATH")?.into()),
            "--apply" => {
                let scenario = args.next().context("--apply SCENARIO PATH")?;
                let path = args.next().context("--apply SCENARIO PATH")?;
                apply = Some((scenario, path.into()));
            }
            "--size-mb" => size_mb = args.next().context("--size-mb N")?.parse()?,
            "--dir" => dir = args.next().context("--dir DIR")?.into(),
            "--seed" => seed = args.next().context("--seed N")?.parse()?,
            "--no-restic" => use_restic = false,
            "--keep" => keep = true,
            other => bail!("unknown argument {other}"),
        }
    }
    if let Some(path) = make_base {
        // The same base state as the measurements: generated, VACUUMed, a day of use.
        generate(&path, size_mb, seed)?;
        vacuum(&path)?;
        return day_of_use(&path, seed ^ 1);
    }
    if let Some((scenario, path)) = apply {
        return match scenario.as_str() {
            "day" => day_of_use(&path, seed ^ 2),
            "vacuum" => vacuum(&path),
            "day-vacuum" => day_of_use(&path, seed ^ 2).and_then(|_| vacuum(&path)),
            "ef-rebuild" => ef_rebuild(&path, false),
            "ef-rebuild-column" => ef_rebuild(&path, true),
            other => bail!("unknown scenario {other}"),
        };
    }
    fs::create_dir_all(&dir)?;
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp)?;

    // Base: generated, VACUUMed (Jellyfin does so every 6 h), then a day of use: the state
    // of a real server some hours after its last VACUUM.
    let base = dir.join("base.db");
    let stamp = dir.join("base.params");
    let want = format!("v5 size_mb={size_mb} seed={seed}");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) || !base.exists() {
        let t = Instant::now();
        let gen = dir.join("gen.db");
        generate(&gen, size_mb, seed)?;
        vacuum(&gen)?;
        day_of_use(&gen, seed ^ 1)?;
        fs::rename(&gen, &base)?;
        fs::write(&stamp, &want)?;
        eprintln!("generated base in {:.0} s", t.elapsed().as_secs_f64());
    }
    let b = capture_both(&base, &tmp)?;
    let db_bytes = b.physical.len() as u64;
    eprintln!(
        "base: {:.1} MiB physical, {:.1} MiB logical dump",
        mb(db_bytes),
        mb(b.logical.len() as u64)
    );

    // Timing: capture (backup API) and logical dump were timed above; restore = write the
    // physical bytes (+fsync) vs. rebuild from the dump.
    let t = Instant::now();
    {
        let p = tmp.join("restore-phys.db");
        let mut f = fs::File::create(&p)?;
        f.write_all(&b.physical)?;
        f.sync_all()?;
        fs::remove_file(&p)?;
    }
    let phys_restore_s = t.elapsed().as_secs_f64();
    let rebuilt = tmp.join("rebuilt.db");
    let _ = fs::remove_file(&rebuilt);
    let t = Instant::now();
    database::rebuild(&mut &b.logical[..], &rebuilt)?;
    let rebuild_s = t.elapsed().as_secs_f64();
    {
        let conn = Connection::open_with_flags(&rebuilt, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut again = Vec::new();
        database::dump(&conn, &mut again)?;
        if again != b.logical {
            bail!("dump of the rebuilt database differs from the original dump");
        }
    }
    let rebuilt_size = fs::metadata(&rebuilt)?.len();
    fs::remove_file(&rebuilt)?;

    let strategies = [
        Strategy::Fixed(4096),
        Strategy::Fixed(16384),
        Strategy::Fixed(65536),
        Strategy::PageCdc { avg_pages: 4 },
        Strategy::PageCdc { avg_pages: 16 },
        Strategy::PhysCdc(8192, 16384, 65536),
        Strategy::LogCdc(4096, 8192, 32768),
        Strategy::LogCdc(8192, 16384, 65536),
        Strategy::LogCdc(32768, 65536, 262144),
    ];
    let base_ids: Vec<Vec<([u8; 32], usize, usize)>> = strategies
        .iter()
        .map(|s| chunk_ids(*s, if s.logical() { &b.logical } else { &b.physical }))
        .collect();
    let empty = HashSet::new();
    let base_full: Vec<Added> = strategies
        .iter()
        .zip(&base_ids)
        .map(|(s, ids)| {
            added(
                &empty,
                ids,
                if s.logical() { &b.logical } else { &b.physical },
            )
        })
        .collect();
    let base_leaves: Vec<HashSet<[u8; 32]>> = base_ids
        .iter()
        .map(|ids| list_leaves(ids).into_iter().map(|l| l.0).collect())
        .collect();
    let base_sets: Vec<HashSet<[u8; 32]>> = base_ids
        .iter()
        .map(|ids| ids.iter().map(|x| x.0).collect())
        .collect();

    let restic_base = dir.join("restic-base");
    if use_restic {
        let _ = fs::remove_dir_all(&restic_base);
        restic(&restic_base, &["init", "--repository-version", "2"])?;
        let src = dir.join("restic-src");
        fs::create_dir_all(&src)?;
        fs::write(src.join("jellyfin.db"), &b.physical)?;
        restic(
            &restic_base,
            &["backup", src.to_str().expect("utf-8"), "--host", "bench"],
        )?;
    }

    type Scenario = (&'static str, fn(&Path) -> Result<()>);
    let scenarios: [Scenario; 5] = [
        ("1 day of use", |p| day_of_use(p, 0xda7)),
        ("2 VACUUM", vacuum),
        ("3 day + VACUUM", |p| {
            day_of_use(p, 0xda7)?;
            vacuum(p)
        }),
        ("4 EF rebuild BaseItems", |p| ef_rebuild(p, false)),
        ("5 EF rebuild + column", |p| ef_rebuild(p, true)),
    ];

    let mut report = String::new();
    let pct = |n: u64, of: u64| 100.0 * n as f64 / of as f64;
    report.push_str(&format!(
        "database: {:.1} MiB ({} pages of 4 KiB, WAL), logical dump {:.1} MiB; rebuilt file {:.1} MiB\n",
        mb(db_bytes),
        db_bytes / PAGE as u64,
        mb(b.logical.len() as u64),
        mb(rebuilt_size)
    ));
    report.push_str(&format!(
        "timing per MiB of database: backup-API capture {:.2} ms, physical restore (write+fsync) {:.2} ms, logical dump {:.2} ms, logical rebuild {:.2} ms\n\n",
        1000.0 * b.capture_s / mb(db_bytes),
        1000.0 * phys_restore_s / mb(db_bytes),
        1000.0 * b.dump_s / mb(db_bytes),
        1000.0 * rebuild_s / mb(db_bytes)
    ));
    report.push_str("first snapshot (everything new):\n");
    for (s, f) in strategies.iter().zip(&base_full) {
        report.push_str(&format!(
            "  {:<32} {:>8} chunks, raw {:>7.1} MiB, stored {:>7.1} MiB ({:>5.1}% of db), chunk list {:>6.2} MiB\n",
            s.name(),
            f.chunks,
            mb(f.raw),
            mb(f.stored),
            pct(f.stored, db_bytes),
            mb(f.chunks * 36)
        ));
    }
    let full_restic = if use_restic { du(&restic_base)? } else { 0 };
    if use_restic {
        report.push_str(&format!(
            "  {:<32} repository {:.1} MiB ({:.1}% of db)\n",
            "restic 0.14 (repo v2, zstd auto)",
            mb(full_restic),
            pct(full_restic, db_bytes)
        ));
    }
    println!("{report}");

    for (name, apply) in scenarios {
        let work = tmp.join("scenario.db");
        let _ = fs::remove_file(&work);
        fs::copy(&base, &work)?;
        apply(&work)?;
        let c = capture_both(&work, &tmp)?;
        fs::remove_file(&work)?;
        let (chg, pages) = changed_pages(&b.physical, &c.physical);
        let size = c.physical.len() as u64;
        let mut s = format!(
            "scenario {name}: db {:.1} MiB, {} of {} pages differ at the same offset ({:.1}%), logical dump {:.1} MiB\n",
            mb(size),
            chg,
            pages,
            pct(chg, pages),
            mb(c.logical.len() as u64)
        );
        for (i, st) in strategies.iter().enumerate() {
            let data = if st.logical() {
                &c.logical
            } else {
                &c.physical
            };
            let ids = chunk_ids(*st, data);
            let a = added(&base_sets[i], &ids, data);
            let l2 = list_added(&base_leaves[i], &ids);
            s.push_str(&format!(
                "  {:<32} new {:>6}/{:<6} chunks, raw {:>7.2} MiB ({:>5.1}%), stored {:>7.2} MiB ({:>5.1}%), list {:>5.2} MiB ({:.2}%), 2-level list {:>5.3} MiB ({:.3}%)\n",
                st.name(),
                a.new_chunks,
                a.chunks,
                mb(a.raw),
                pct(a.raw, size),
                mb(a.stored),
                pct(a.stored, size),
                mb(a.chunks * 36),
                pct(a.chunks * 36, size),
                mb(l2),
                pct(l2, size)
            ));
        }
        if use_restic {
            let r = restic_added(&dir, &restic_base, &c.physical, "scenario")?;
            s.push_str(&format!(
                "  {:<32} added {:>7.2} MiB ({:>5.1}% of db, {:.0}% of its full copy)\n",
                "restic 0.14",
                mb(r),
                pct(r, size),
                pct(r, full_restic)
            ));
        }
        println!("{s}");
        report.push_str(&s);
        report.push('\n');
    }
    fs::write(dir.join("report.txt"), &report)?;
    if !keep {
        let _ = fs::remove_dir_all(&restic_base);
        let _ = fs::remove_dir_all(dir.join("restic-src"));
    }
    Ok(())
}
