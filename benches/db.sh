#!/usr/bin/env bash
# Database benchmark: bytes a snapshot adds after typical changes to a large
# jellyfin.db, jellysnap vs restic. Not run in CI. See benches/README.md.
#
# A small Jellyfin-shaped data dir (gen_dataset) gets a generated jellyfin.db of DB_MB MiB
# (examples/db_strategies --make-base: EF-Core-style schema, generated, VACUUMed, then a
# day of use). Both tools back up that base state once. Then, for each scenario, the base
# database is put back, the scenario is applied, and each tool backs up into a copy of its
# base repository; the report gives what the backup added:
#   day                 a day of use (scattered UserData/BaseItems updates, inserts, deletes)
#   vacuum              VACUUM with no logical change
#   day-vacuum          a day of use, then VACUUM
#   ef-rebuild          EF Core table rebuild of BaseItems (create, copy, drop, rename, indexes)
#   ef-rebuild-column   the same rebuild adding a nullable column
#
# Environment:
#   DB_MB       database size in MiB (default 220; at least 200 is a realistic large library)
#   BENCH_DIR   work dir (default: a new mktemp dir under ${TMPDIR:-/var/tmp}, removed at
#               the end unless KEEP=1; a BENCH_DIR you give is always kept, and its
#               generated base database is reused when DB_MB and SEED match)
#   SEED        database seed (default 20251125)
#   KEEP        1 = keep the work dir
#   RESTIC      restic binary (default: restic on PATH, apt-get installed if missing;
#               NO_RESTIC=1 skips it)
#   SKIP_BUILD  1 = do not run cargo build
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
REPO_ROOT=$(pwd)

DB_MB=${DB_MB:-220}
SEED=${SEED:-20251125}
KEEP=${KEEP:-0}
NO_RESTIC=${NO_RESTIC:-0}
if [[ -n "${BENCH_DIR:-}" ]]; then
    KEEP=1
    mkdir -p "$BENCH_DIR"
else
    BENCH_DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/jellysnap-dbbench.XXXXXX")
fi
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)

JS="$REPO_ROOT/target/release/jellysnap"
GEN="$REPO_ROOT/target/release/examples/gen_dataset"
DBGEN="$REPO_ROOT/target/release/examples/db_strategies"
SRC="$BENCH_DIR/src"
DATA="$SRC/config" # docker layout
DB="$DATA/data/jellyfin.db"
BASE_DB="$BENCH_DIR/base.db"
LOGS="$BENCH_DIR/logs"
export RESTIC_PASSWORD=bench
export RESTIC_CACHE_DIR="$BENCH_DIR/restic-cache"

log() { printf '[db %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
cleanup() {
    if [[ "$KEEP" != 1 ]]; then rm -rf -- "$BENCH_DIR"; else log "work dir kept: $BENCH_DIR"; fi
}
trap cleanup EXIT

if [[ "$NO_RESTIC" != 1 ]]; then
    RESTIC=${RESTIC:-$(command -v restic || true)}
    if [[ -z "$RESTIC" ]]; then
        log "installing restic"
        apt-get install -y restic >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y restic >/dev/null 2>&1; } \
            || die "restic missing (apt-get install -y restic, or NO_RESTIC=1)"
        RESTIC=$(command -v restic) || die "restic missing"
    fi
fi
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release --examples --bins"
    cargo build --release --examples --bins || die "build failed"
fi
for b in "$JS" "$GEN" "$DBGEN"; do [[ -x "$b" ]] || die "$b not built"; done
mkdir -p "$LOGS"

# --- base state ---------------------------------------------------------------------------

STAMP="db_mb=$DB_MB seed=$SEED"
if [[ ! -s "$BASE_DB" || "$(cat "$BENCH_DIR/base.params" 2>/dev/null)" != "$STAMP" ]]; then
    log "generating a ${DB_MB} MiB jellyfin.db (a few minutes)"
    rm -f -- "$BASE_DB" "$BASE_DB"-wal "$BASE_DB"-shm
    "$DBGEN" --make-base "$BASE_DB" --size-mb "$DB_MB" --seed "$SEED" >"$LOGS/make-base.log" 2>&1 \
        || die "db_strategies --make-base failed (see $LOGS/make-base.log)"
    echo "$STAMP" >"$BENCH_DIR/base.params"
fi
rm -rf -- "$SRC"
"$GEN" --out "$SRC" --layout docker --scale-mib 32 --seed 1 >"$LOGS/gen.txt" 2>&1 || die "gen_dataset failed"

put_base() {
    rm -f -- "$DB" "$DB"-wal "$DB"-shm
    cp "$BASE_DB" "$DB"
}

json_num() { # json_num KEY < json
    grep -oE "\"$1\": ?[0-9]+" | head -n1 | grep -oE '[0-9]+$'
}
size_of() { du -sb "$1" | awk '{print $1}'; }

RESTIC_EXCLUDES=(--exclude "$DATA/log" --exclude "$DATA/cache" --exclude "$DATA/transcodes"
    --exclude "$DATA/data/backups" --exclude "$DATA/data/SQLiteBackups" --exclude "*-wal" --exclude "*-shm")

put_base
log "base backups"
"$JS" --repo "$BENCH_DIR/js-base" init >"$LOGS/js-init.log" 2>&1 || die "jellysnap init failed"
T0=$(date +%s.%N)
"$JS" --repo "$BENCH_DIR/js-base" --json backup --data-dir "$DATA" >"$LOGS/js-base.json" 2>"$LOGS/js-base.err" \
    || die "jellysnap base backup failed (see $LOGS/js-base.err)"
JS_BASE_S=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
JS_BASE_ADDED=$(json_num new_stored_bytes <"$LOGS/js-base.json")
if [[ "$NO_RESTIC" != 1 ]]; then
    "$RESTIC" init --repo "$BENCH_DIR/rs-base" --repository-version 2 >"$LOGS/rs-init.log" 2>&1 || die "restic init failed"
    "$RESTIC" --repo "$BENCH_DIR/rs-base" backup --host bench "${RESTIC_EXCLUDES[@]}" "$DATA" >"$LOGS/rs-base.log" 2>&1 \
        || die "restic base backup failed"
fi
T0=$(date +%s.%N)
"$JS" --repo "$BENCH_DIR/js-base" -q restore latest --target "$BENCH_DIR/restore" >"$LOGS/js-restore.log" 2>&1 \
    || die "jellysnap restore failed (see $LOGS/js-restore.log)"
JS_RESTORE_S=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
RESTORED_DB_BYTES=$(size_of "$BENCH_DIR/restore/data/jellyfin.db")
rm -rf -- "$BENCH_DIR/restore"

# --- scenarios ----------------------------------------------------------------------------

SCENARIOS=(day vacuum day-vacuum ef-rebuild ef-rebuild-column)
declare -A DBSIZE JSADD JSGROW RSGROW
for s in "${SCENARIOS[@]}"; do
    put_base
    log "$s"
    "$DBGEN" --apply "$s" "$DB" --seed "$SEED" >"$LOGS/apply-$s.log" 2>&1 || die "--apply $s failed"
    DBSIZE[$s]=$(size_of "$DB")
    rm -rf -- "$BENCH_DIR/js-$s"
    cp -a "$BENCH_DIR/js-base" "$BENCH_DIR/js-$s"
    before=$(size_of "$BENCH_DIR/js-$s")
    "$JS" --repo "$BENCH_DIR/js-$s" --json backup --data-dir "$DATA" >"$LOGS/js-$s.json" 2>"$LOGS/js-$s.err" \
        || die "jellysnap backup ($s) failed (see $LOGS/js-$s.err)"
    JSADD[$s]=$(json_num new_stored_bytes <"$LOGS/js-$s.json")
    JSGROW[$s]=$(($(size_of "$BENCH_DIR/js-$s") - before))
    rm -rf -- "$BENCH_DIR/js-$s"
    if [[ "$NO_RESTIC" != 1 ]]; then
        rm -rf -- "$BENCH_DIR/rs-$s"
        cp -a "$BENCH_DIR/rs-base" "$BENCH_DIR/rs-$s"
        before=$(size_of "$BENCH_DIR/rs-$s")
        "$RESTIC" --repo "$BENCH_DIR/rs-$s" backup --host bench "${RESTIC_EXCLUDES[@]}" "$DATA" >"$LOGS/rs-$s.log" 2>&1 \
            || die "restic backup ($s) failed"
        RSGROW[$s]=$(($(size_of "$BENCH_DIR/rs-$s") - before))
        rm -rf -- "$BENCH_DIR/rs-$s"
    else
        RSGROW[$s]=-
    fi
done

# --- report -------------------------------------------------------------------------------

mib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9]+$/) printf "%.2f", b / 1048576; else print "-" }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9]+$/ && b > 0) printf "%.2f%%", 100 * a / b; else print "-" }'; }

BASE_BYTES=$(size_of "$BASE_DB")
echo
echo "## jellysnap vs restic — bytes added per snapshot of a $(mib "$BASE_BYTES") MiB jellyfin.db"
echo
echo "- first snapshot: jellysnap stored $(mib "$JS_BASE_ADDED") MiB in ${JS_BASE_S} s; restore (rebuild) ${JS_RESTORE_S} s, rebuilt file $(mib "$RESTORED_DB_BYTES") MiB"
echo "- jellysnap: $("$JS" --version 2>/dev/null || echo '?'); restic: $([[ "$NO_RESTIC" != 1 ]] && "$RESTIC" version 2>/dev/null | head -n1 || echo skipped); $(nproc) cores"
echo
echo "| scenario | db MiB | jellysnap new stored | % of db | jellysnap repo growth | % of db | restic repo growth | % of db |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for s in "${SCENARIOS[@]}"; do
    d=${DBSIZE[$s]}
    echo "| $s | $(mib "$d") | $(mib "${JSADD[$s]}") | $(pct "${JSADD[$s]}" "$d") | $(mib "${JSGROW[$s]}") | $(pct "${JSGROW[$s]}" "$d") | $(mib "${RSGROW[$s]}") | $(pct "${RSGROW[$s]}" "$d") |"
done
echo
echo "- new stored = the snapshot summary's new_stored_bytes (compressed chunk payloads);"
echo "  repo growth = \`du -sb\` of the repository after minus before (packs, index, record)."
