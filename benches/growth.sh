#!/usr/bin/env bash
# Growth benchmark: many hourly snapshots of a slowly changing Jellyfin data dir, with the
# README's retention for hourly snapshots and gc every 24th hour. Records, after every
# step, the command's wall and CPU time and peak RSS, the repository's and the data dir's
# sizes and file counts in a CSV, then plots them (benches/growth_plot.py) and checks that nothing grows
# faster than the data. Not run in CI. See benches/README.md.
#
# Each simulated hour (step 0 is the first backup of the generated data dir):
#   - the database changes through the sqlite3 CLI as on a server in use: a few
#     UserData rows (play state, position, last played), a user's last activity,
#     activity-log rows;
#   - every 3rd hour one or two metadata images are rewritten (same name, similar size);
#   - every 8th hour a small item arrives: 2 trickplay sheets, a poster, 2 chapter
#     images, its BaseItems and UserData rows;
#   - every 24th hour (offset 12) one item is deleted, files and rows;
#   - then `jellysnap backup`, with the snapshot dated at the simulated hour;
#   - every 24th hour, after the backup: `forget` with the README's policy for hourly
#     snapshots, `gc`, `snapshots`, `stats` (untimed, for the stored size), and a fixed
#     CPU workload (sha256 of 64 MiB of zeros) that shows how the machine's load moved.
# Every jellysnap command runs under /usr/bin/time -v. The snapshots are dated with
# JELLYSNAP_NOW (a build with the `test-hooks` feature), one hour apart, starting after
# the real clock, so the calendar retention sees hourly snapshots.
#
# Page caches are NOT dropped (no machine-wide side effects): every step reads a warm
# cache, as an hourly timer on a server mostly does. Absolute times depend on the load of
# the machine; the benchmark is about how they change with the snapshot count.
#
# Environment:
#   SNAPSHOTS   number of snapshots (hours) (default 500)
#   SCALE_MIB   generated dataset size in MiB (default 256)
#   SEED        dataset and change seed (default 1)
#   BENCH_DIR   work dir (default: a new mktemp dir under ${TMPDIR:-/var/tmp}); at the end
#               everything in it but growth.csv and summary.txt is removed unless KEEP=1
#   KEEP        1 = keep the data dir, repository and logs
#   OUT_SVG     the plot (default docs/growth.svg in the repository)
#   JS, GEN     jellysnap and gen_dataset binaries (default target/release/...; built with
#               `cargo build --release --bins --examples --features test-hooks` if missing)
#   POLICY      forget flags (default: the README's recommendation for hourly snapshots)
set -uo pipefail
export LC_ALL=C   # "." in $EPOCHREALTIME and in numbers

# Relative paths given by the caller are relative to where it ran the script.
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[[ -n "${OUT_SVG:-}" ]] && OUT_SVG=$(abs "$OUT_SVG")
[[ -n "${BENCH_DIR:-}" ]] && BENCH_DIR=$(abs "$BENCH_DIR")
[[ -n "${JS:-}" ]] && JS=$(abs "$JS")
[[ -n "${GEN:-}" ]] && GEN=$(abs "$GEN")
cd "$(dirname "$0")/.." || exit 1
REPO_ROOT=$(pwd)

SNAPSHOTS=${SNAPSHOTS:-500}
SCALE_MIB=${SCALE_MIB:-256}
SEED=${SEED:-1}
KEEP=${KEEP:-0}
OUT_SVG=${OUT_SVG:-$REPO_ROOT/docs/growth.svg}
POLICY=${POLICY:---keep-hourly 24 --keep-daily 14 --keep-weekly 8 --keep-monthly 6}
JS=${JS:-$REPO_ROOT/target/release/jellysnap}
GEN=${GEN:-$REPO_ROOT/target/release/examples/gen_dataset}
if [[ -n "${BENCH_DIR:-}" ]]; then
    mkdir -p "$BENCH_DIR"
else
    BENCH_DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/jellysnap-growth.XXXXXX")
fi
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
SRC="$BENCH_DIR/src"
DATA="$SRC/config"               # docker layout: the data dir; its config dir is $DATA/config
DB="$DATA/data/jellyfin.db"
JS_REPO="$BENCH_DIR/repo"
LOGS="$BENCH_DIR/logs"
CSV="$BENCH_DIR/growth.csv"
SUMMARY="$BENCH_DIR/summary.txt"

log() { printf '[growth %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ------------------------------------------------------------------------------

if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time"
    apt-get install -y time >/dev/null 2>&1 || die "/usr/bin/time missing (apt-get install -y time)"
fi
command -v sqlite3 >/dev/null || apt-get install -y sqlite3 >/dev/null 2>&1 \
    || die "sqlite3 missing (apt-get install -y sqlite3)"
command -v python3 >/dev/null || die "python3 missing"
if [[ ! -x "$JS" || ! -x "$GEN" ]]; then
    log "cargo build --release --bins --examples --features test-hooks"
    cargo build --release --bins --examples --features test-hooks || die "build failed"
fi
[[ -x "$GEN" ]] || die "$GEN not built"
[[ -x "$JS" ]] || die "$JS not built"

# --- dataset ----------------------------------------------------------------------------

rm -rf -- "$SRC" "$JS_REPO" "$LOGS"
mkdir -p "$LOGS"
log "generating ${SCALE_MIB} MiB docker dataset in $SRC"
"$GEN" --out "$SRC" --layout docker --scale-mib "$SCALE_MIB" --seed "$SEED" >"$LOGS/gen.txt" 2>&1 \
    || die "gen_dataset failed (see $LOGS/gen.txt)"

# Jellyfin keeps its activity log in jellyfin.db; the generator does not make that table.
sqlite3 "$DB" <<'SQL' || die "sqlite3 could not open $DB"
CREATE TABLE IF NOT EXISTS "ActivityLogs" (
    "Id" INTEGER NOT NULL CONSTRAINT "PK_ActivityLogs" PRIMARY KEY AUTOINCREMENT,
    "Name" TEXT NOT NULL,
    "Overview" TEXT NULL,
    "ShortOverview" TEXT NULL,
    "Type" TEXT NOT NULL,
    "UserId" TEXT NOT NULL,
    "ItemId" TEXT NULL,
    "DateCreated" TEXT NOT NULL,
    "LogSeverity" INTEGER NOT NULL,
    "RowVersion" INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS "IX_ActivityLogs_DateCreated" ON "ActivityLogs" ("DateCreated");
SQL

# --- simulated use ----------------------------------------------------------------------

RANDOM=$SEED
# The snapshots' clock: hour 0 is the next full hour a day after now, so every simulated
# time is later than any real file time in the data dir (nothing looks racy).
T0=$(( ( $(date +%s) / 3600 + 25 ) * 3600 ))
USERS=($(sqlite3 "$DB" 'SELECT Id FROM Users ORDER BY InternalId'))
((${#USERS[@]} > 0)) || die "no Users rows in $DB"

sim_date() { date -u -d "@$1" '+%Y-%m-%d %H:%M:%S.0000000'; }
rand_between() { echo $(( $1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1) )); }
# random_file PATH BYTES: incompressible bytes, as a JPEG's are.
random_file() { mkdir -p "$(dirname "$1")" && head -c "$2" /dev/urandom >"$1.tmp" && mv -f "$1.tmp" "$1"; }
guid_of() { # 32 hex digits -> the database's upper-case GUID
    local h=${1^^}
    echo "${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}"
}
items() { find "$DATA/metadata/library" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' | sort; }

# What the simulated use did so far: items added and deleted, and the bytes of files
# deleted or overwritten (what the repository keeps as history while retention holds it).
ADDED=0 DELETED=0 REMOVED=0
hour_of_use() { # hour_of_use HOUR
    local h=$1 now k sql="BEGIN;" user item
    now=$(sim_date $((T0 + h * 3600 - $(rand_between 60 3000))))
    k=$(rand_between 2 8)
    for ((j = 0; j < k; j++)); do
        sql+="UPDATE UserData SET PlaybackPositionTicks = $(rand_between 0 2000000000)0,
              PlayCount = PlayCount + $((RANDOM % 2)), Played = $((RANDOM % 2)),
              LastPlayedDate = '$now'
              WHERE rowid = (SELECT rowid FROM UserData LIMIT 1 OFFSET
                             abs(random()) % (SELECT count(*) FROM UserData));"
    done
    user=${USERS[RANDOM % ${#USERS[@]}]}
    sql+="UPDATE Users SET LastActivityDate = '$now', LastLoginDate = '$now' WHERE Id = '$user';"
    k=$(rand_between 3 12)
    for ((j = 0; j < k; j++)); do
        sql+="INSERT INTO ActivityLogs (Name, Overview, ShortOverview, Type, UserId, ItemId,
              DateCreated, LogSeverity, RowVersion)
              VALUES ('user $((RANDOM % 5)) is playing an item', NULL, 'on Jellyfin Web',
                      'VideoPlayback', '$user',
                      (SELECT Id FROM BaseItems LIMIT 1 OFFSET
                       abs(random()) % (SELECT count(*) FROM BaseItems)),
                      '$now', 2, 0);"
    done
    sql+="COMMIT;"
    sqlite3 "$DB" "$sql" || die "sqlite3 update failed at hour $h"

    if ((h % 3 == 0)); then # the image refresher rewrites an image or two
        mapfile -t imgs < <(find "$DATA/metadata/library" -name '*.jpg' | shuf -n $((1 + RANDOM % 2)) --random-source=<(yes "$h"))
        for f in "${imgs[@]}"; do
            local sz
            sz=$(stat -c %s "$f")
            REMOVED=$((REMOVED + sz))
            random_file "$f" $(( sz * (80 + RANDOM % 41) / 100 ))
        done
    fi

    if ((h % 8 == 4)); then # a new episode: trickplay, poster, chapters, rows
        local id guid dir tp
        id=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
        guid=$(guid_of "$id")
        dir="$DATA/metadata/library/${id:0:2}/$id"
        tp="$DATA/data/trickplay/${id:0:2}/$id/320 - 10x10"
        random_file "$dir/poster.jpg" "$(rand_between 60000 140000)"
        random_file "$dir/chapters/3000000000.jpg" "$(rand_between 60000 160000)"
        random_file "$dir/chapters/6000000000.jpg" "$(rand_between 60000 160000)"
        random_file "$tp/0.jpg" "$(rand_between 200000 330000)"
        random_file "$tp/1.jpg" "$(rand_between 100000 250000)"
        sql="BEGIN;
             INSERT INTO BaseItems (Id, Type, Name, Path, Overview, DateCreated, DateModified,
                                    ProductionYear, RunTimeTicks, ParentId)
             VALUES ('$guid', 'MediaBrowser.Controller.Entities.TV.Episode', 'Episode $h',
                     '/media/tv/Show/Season 1/Episode $h.mkv', 'a new episode', '$now', '$now',
                     2026, $(rand_between 12000 36000)0000000, NULL);"
        for user in "${USERS[@]}"; do
            sql+="INSERT INTO UserData VALUES ('$guid', '$user', 0, 0, 0, 0, NULL);"
        done
        sqlite3 "$DB" "$sql COMMIT;" || die "sqlite3 insert failed at hour $h"
        ADDED=$((ADDED + 1))
    fi

    if ((h % 24 == 12)); then # an item removed from the library
        local victim guid
        victim=$(items | shuf -n 1 --random-source=<(yes "$h"))
        if [[ -n "$victim" ]]; then
            guid=$(guid_of "$victim")
            REMOVED=$((REMOVED + $(du -sbc "$DATA/metadata/library/${victim:0:2}/$victim" \
                "$DATA/data/trickplay/${victim:0:2}/$victim" 2>/dev/null | awk 'END {print $1}')))
            DELETED=$((DELETED + 1))
            rm -rf -- "$DATA/metadata/library/${victim:0:2}/$victim" "$DATA/data/trickplay/${victim:0:2}/$victim"
            rmdir --ignore-fail-on-non-empty "$DATA/metadata/library/${victim:0:2}" "$DATA/data/trickplay/${victim:0:2}" 2>/dev/null
            sqlite3 "$DB" "BEGIN; DELETE FROM UserData WHERE ItemId = '$guid';
                           DELETE FROM BaseItems WHERE Id = '$guid'; COMMIT;" \
                || die "sqlite3 delete failed at hour $h"
        fi
    fi
}

# --- measurement ------------------------------------------------------------------------

echo "step,snapshots_taken,op,wall_s,cpu_s,max_rss_kb,rc,repo_bytes,repo_files,data_packs,tree_packs,index_bytes,data_bytes,data_files,db_bytes,new_stored_bytes,files_read,snapshots_listed,stored_bytes,removed_bytes,gc_packs,gc_packs_deleted,gc_packs_repacked,gc_bytes_repacked,gc_bytes_freed" >"$CSV"

# timed OP STEP NOW CMD...: runs CMD under /usr/bin/time -v with the clock at NOW; the
# command's stdout in $LOGS/last-OP.out, wall and CPU (user + system) seconds and max RSS
# (KiB) in $WALL, $CPU and $RSS.
timed() {
    local op=$1 step=$2 now=$3; shift 3
    local t0=$EPOCHREALTIME t1
    JELLYSNAP_NOW=$now /usr/bin/time -v -o "$LOGS/last.time" "$@" >"$LOGS/last-$op.out" 2>"$LOGS/last-$op.err"
    RC=$?
    t1=$EPOCHREALTIME
    # Wall time from the shell's clock (time -v rounds it to 10 ms); RSS and CPU from time -v.
    read -r WALL CPU RSS < <(awk -F': ' -v t0="$t0" -v t1="$t1" '
        /User time \(seconds\)/ || /System time \(seconds\)/ { c += $NF }
        /Maximum resident set size/ { r = $NF }
        END { printf "%.4f %.2f %d\n", t1 - t0, c, r }' "$LOGS/last.time")
    if ((RC != 0)); then
        log "$op at step $step FAILED (exit $RC):"
        tail -n 5 "$LOGS/last-$op.err" >&2
        cp "$LOGS/last-$op.err" "$LOGS/failed-$op-$step.err"
    fi
}

# row STEP OP [DATA_FILES DB_BYTES NEW_STORED FILES_READ | LISTED STORED | GC...]: the
# columns after `removed_bytes` come from the command's --json output, where it has them.
row() {
    local repo repo_files data_packs tree_packs index data
    repo=$(du -sb "$JS_REPO" | awk '{print $1}')
    repo_files=$(find "$JS_REPO" -type f | wc -l)
    data_packs=$(find "$JS_REPO/packs" -type f 2>/dev/null | wc -l)
    tree_packs=$(find "$JS_REPO/trees" -type f 2>/dev/null | wc -l)
    index=$(du -sb "$JS_REPO/index" 2>/dev/null | awk '{print $1}')
    data=$(du -sb "$DATA" | awk '{print $1}')
    echo "$1,$TAKEN,$2,$WALL,$CPU,$RSS,$RC,$repo,$repo_files,$data_packs,$tree_packs,${index:-0},$data,${3:-},${4:-},${5:-},${6:-},${7:-},${8:-},$REMOVED,${9:-},${10:-},${11:-},${12:-},${13:-}" >>"$CSV"
}

# The first snapshot shows whether this build dates snapshots by JELLYSNAP_NOW.
clock_check() {
    local got
    got=$("$JS" --repo "$JS_REPO" --json snapshots | python3 -c '
import json, sys
print(max(s["time_ns"] for s in json.load(sys.stdin)) // 10**9)' 2>/dev/null)
    [[ "$got" == "$T0" ]] || die "the snapshot is dated $got, not $T0: this jellysnap ignores JELLYSNAP_NOW; build it with --features test-hooks"
}

JS_BACKUP=(--repo "$JS_REPO" --json backup --init --data-dir "$DATA")
read -r -a POLICY_ARGS <<<"$POLICY"
TAKEN=0
START=$(date +%s)
log "$SNAPSHOTS hourly snapshots into $JS_REPO (forget: $POLICY; gc every 24th)"
for ((step = 0; step < SNAPSHOTS; step++)); do
    ((step > 0)) && hour_of_use "$step"
    now=$((T0 + step * 3600))
    timed backup "$step" "$now" "$JS" "${JS_BACKUP[@]}"
    ((RC == 0)) && TAKEN=$((TAKEN + 1))
    BACKUP_WALL=$WALL
    read -r files db_bytes new_stored files_read < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["snapshot"]["summary"]
print(s["files"], s["db_bytes"], s["new_stored_bytes"], s["files_read"])' "$LOGS/last-backup.out" 2>/dev/null \
        || echo "- - - -")
    row "$step" backup "$files" "$db_bytes" "$new_stored" "$files_read"
    ((step == 0)) && clock_check
    if ((step > 0 && step % 24 == 0)); then
        timed forget "$step" $((now + 60)) "$JS" --repo "$JS_REPO" forget "${POLICY_ARGS[@]}"
        row "$step" forget
        timed gc "$step" $((now + 120)) "$JS" --repo "$JS_REPO" --json gc
        read -r -a gcw < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); p, r = d["plan"], d["report"] or {}
print(p["packs"], r.get("packs_deleted", ""), r.get("packs_repacked", ""), p["bytes_repacked"],
      r.get("bytes_freed", ""))' "$LOGS/last-gc.out" 2>/dev/null || echo "- - - - -")
        row "$step" gc "" "" "" "" "" "" "${gcw[@]}"
        timed snapshots "$step" $((now + 180)) "$JS" --repo "$JS_REPO" snapshots
        listed=$(sed -nE 's/^([0-9]+) snapshot\(s\).*/\1/p' "$LOGS/last-snapshots.out")
        stored=$("$JS" --repo "$JS_REPO" --json stats 2>/dev/null | python3 -c '
import json, sys
print(json.load(sys.stdin)["repository"]["stored_bytes"])' 2>/dev/null)
        row "$step" snapshots "" "" "" "" "$listed" "$stored"
        # The same CPU work every day: how much slower the machine (its load) has made
        # every command since the start, whatever jellysnap does.
        timed reference "$step" "$now" bash -c 'head -c 64M /dev/zero | sha256sum >/dev/null'
        row "$step" reference
        log "step $step: backup ${BACKUP_WALL}s; $listed snapshots kept; repo $(du -sh "$JS_REPO" | cut -f1) in ${gcw[0]} packs, data $(du -sh "$DATA" | cut -f1)"
    fi
done
ELAPSED=$(( $(date +%s) - START ))

# --- report -----------------------------------------------------------------------------

{
    echo "## growth: $SNAPSHOTS hourly snapshots of a ${SCALE_MIB} MiB docker dataset"
    echo
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load at the end $(cut -d' ' -f1-3 /proc/loadavg); page caches not dropped (warm cache, as an hourly timer mostly sees)"
    echo "- jellysnap: $("$JS" --version 2>/dev/null || echo '?'); forget $POLICY, then gc, every 24th snapshot; run took ${ELAPSED} s"
    echo "- simulated use: $ADDED items added, $DELETED deleted, $((REMOVED / 1048576)) MiB of files deleted or overwritten; failed commands: $(awk -F, 'NR > 1 && $7 != 0' "$CSV" | wc -l)"
    echo
    mkdir -p "$(dirname "$OUT_SVG")"
    python3 "$REPO_ROOT/benches/growth_plot.py" "$CSV" "$OUT_SVG"
} | tee "$SUMMARY"

if [[ "$KEEP" != 1 ]]; then
    rm -rf -- "$SRC" "$JS_REPO" "$LOGS"
    log "kept $CSV and $SUMMARY; removed the data dir, repository and logs"
else
    log "work dir kept: $BENCH_DIR"
fi
