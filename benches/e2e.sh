#!/usr/bin/env bash
# End-to-end benchmark: jellysnap vs restic on a generated Jellyfin-shaped dataset.
# Not run in CI. See benches/README.md.
#
# Scenarios, each timed with /usr/bin/time -v (wall seconds, max RSS) for both tools:
#   cold       first backup into an empty repository
#   no-change  second backup, nothing changed
#   no-change-warm  another, page cache warm (each tool backs up once untimed first):
#              an hourly snapshot on a server whose data dir is in the cache
#   day        backup after `gen_dataset --day-of-changes`
#   restore    full restore of the latest snapshot into an empty directory
# and, in the same run, the machine's limits for the same bytes (caches dropped too):
#   limit-read  every file of the backed-up set read once (4 readers in parallel)
#   limit-copy  `cp -a` of the backed-up set to the repositories' disk, then `sync`
#               (what any backup or restore of incompressible data must at least do)
#   limit-disk  the disk's bandwidth for moving the set: jellysnap's packs read with
#               O_DIRECT (2 readers) while as many bytes are written with O_DIRECT and
#               fsync'd (taken after the cold backup, which made the packs); no page
#               cache, no per-file work: no backup or restore of these bytes can be faster
#
# Environment:
#   SCALE_MIB   dataset size in MiB (default 3072)
#   BENCH_DIR   work dir (default: a new mktemp dir under ${TMPDIR:-/var/tmp}, removed at
#               the end unless KEEP=1; a BENCH_DIR you give is always kept)
#   LAYOUT      docker | debian | linuxserver (default docker)
#   SEED        dataset seed (default 1)
#   KEEP        1 = keep the work dir and restore targets
#   RESTIC      restic binary (default: restic on PATH, apt-get installed if missing)
#   SKIP_BUILD  1 = do not run cargo build
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
REPO_ROOT=$(pwd)

SCALE_MIB=${SCALE_MIB:-3072}
LAYOUT=${LAYOUT:-docker}
SEED=${SEED:-1}
KEEP=${KEEP:-0}
if [[ -n "${BENCH_DIR:-}" ]]; then
    KEEP=1
    mkdir -p "$BENCH_DIR"
else
    BENCH_DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/jellysnap-bench.XXXXXX")
fi
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)

JS="$REPO_ROOT/target/release/jellysnap"
GEN="$REPO_ROOT/target/release/examples/gen_dataset"
SRC="$BENCH_DIR/src"
JS_REPO="$BENCH_DIR/repo-jellysnap"
RS_REPO="$BENCH_DIR/repo-restic"
TIMES="$BENCH_DIR/times"
LOGS="$BENCH_DIR/logs"
export RESTIC_PASSWORD=bench
export RESTIC_CACHE_DIR="$BENCH_DIR/restic-cache"

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    if [[ "$KEEP" != 1 ]]; then
        rm -rf -- "$BENCH_DIR"
    else
        log "work dir kept: $BENCH_DIR"
    fi
}
trap cleanup EXIT

# --- tools ------------------------------------------------------------------------------

if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time"
    apt-get install -y time >/dev/null 2>&1 || die "/usr/bin/time missing (apt-get install -y time)"
fi
RESTIC=${RESTIC:-$(command -v restic || true)}
if [[ -z "$RESTIC" ]]; then
    log "installing restic"
    apt-get install -y restic >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y restic >/dev/null 2>&1; } \
        || die "restic missing (apt-get install -y restic)"
    RESTIC=$(command -v restic) || die "restic missing"
fi

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release --examples --bins"
    cargo build --release --examples --bins || die "build failed"
fi
[[ -x "$GEN" ]] || die "$GEN not built"
[[ -x "$JS" ]] || die "$JS not built"

# --- dataset ----------------------------------------------------------------------------

case "$LAYOUT" in
    docker)      DATA="$SRC/config";           CONFIG="" ;;                 # config is $DATA/config
    debian)      DATA="$SRC/var/lib/jellyfin"; CONFIG="$SRC/etc/jellyfin" ;;
    linuxserver) DATA="$SRC/config/data";      CONFIG="$SRC/config" ;;
    *) die "unknown LAYOUT=$LAYOUT (docker|debian|linuxserver)" ;;
esac

rm -rf -- "$SRC" "$JS_REPO" "$RS_REPO" "$RESTIC_CACHE_DIR" "$BENCH_DIR"/restore-*
mkdir -p "$TIMES" "$LOGS"
log "generating ${SCALE_MIB} MiB $LAYOUT dataset in $SRC"
"$GEN" --out "$SRC" --layout "$LAYOUT" --scale-mib "$SCALE_MIB" --seed "$SEED" | tee "$LOGS/gen.txt" >&2 \
    || die "gen_dataset failed"

# What restic should back up: the same state jellysnap captures (docs/ARCHITECTURE.md, "Jellyfin's data dir"), i.e. the
# data dir (and the config dir when separate) minus cache, logs, transcodes, Jellyfin's
# own backups, SQLite leftovers and live TV recordings.
RESTIC_PATHS=("$DATA")
[[ -n "$CONFIG" ]] && RESTIC_PATHS+=("$CONFIG")
RESTIC_EXCLUDES=(
    --exclude "$SRC/cache" --exclude "$SRC/var/cache" --exclude "$SRC/var/log"
    --exclude "$SRC/config/cache" --exclude "$SRC/config/log"
    --exclude "$DATA/log" --exclude "$DATA/cache" --exclude "$DATA/transcodes"
    --exclude "$DATA/data/backups" --exclude "$DATA/data/SQLiteBackups"
    --exclude "$DATA/data/livetv/recordings" --exclude "$DATA/data/library.db.old"
    --exclude "*-wal" --exclude "*-shm"
)
JS_BACKUP=(--repo "$JS_REPO" backup --init --data-dir "$DATA")
[[ -n "$CONFIG" ]] && JS_BACKUP+=(--config-dir "$CONFIG")

# --- measurement helpers -----------------------------------------------------------------

DROP_CACHES=no
drop_caches() {
    sync
    # Let the disk finish writing back what the previous step (or the generator) wrote,
    # so that whichever tool runs first does not pay for it.
    sleep "${SETTLE_SECS:-5}"
    if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then DROP_CACHES=yes; fi
}

# run_timed NAME CMD... : runs CMD under /usr/bin/time -v, output to $LOGS/NAME.log.
# Records wall seconds and max RSS (KiB) in $TIMES/NAME.{wall,rss,rc}; never aborts.
run_timed() {
    local name=$1; shift
    [[ "${NO_DROP:-0}" == 1 ]] || drop_caches
    log "$name: $*"
    /usr/bin/time -v -o "$TIMES/$name.time" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    echo "$rc" >"$TIMES/$name.rc"
    awk -F': ' '
        /Elapsed \(wall clock\) time/ {
            n = split($NF, p, ":"); s = 0
            for (i = 1; i <= n; i++) s = s * 60 + p[i]
            printf "%.2f\n", s > wall
        }
        /Maximum resident set size/ { print $NF > rss }
    ' wall="$TIMES/$name.wall" rss="$TIMES/$name.rss" "$TIMES/$name.time"
    if [[ $rc -ne 0 ]]; then
        log "$name FAILED (exit $rc); last lines of $LOGS/$name.log:"
        tail -n 5 "$LOGS/$name.log" >&2
    fi
    return 0
}

repo_size() { # repo_size NAME DIR
    du -sb "$2" 2>/dev/null | awk '{print $1}' >"$TIMES/$1.size" || echo 0 >"$TIMES/$1.size"
}

# --- scenarios ---------------------------------------------------------------------------

# Repositories (initialisation is not timed).
if "$JS" --help 2>/dev/null | grep -Eq '^\s+init\b'; then
    "$JS" --repo "$JS_REPO" init >"$LOGS/jellysnap-init.log" 2>&1 || log "jellysnap init failed (see $LOGS/jellysnap-init.log)"
fi
# restic >= 0.14: repository format 2 (zstd compression, like jellysnap); --no-scan
# (0.15+) skips the size pre-scan that only feeds the progress bar.
RESTIC_INIT=()
"$RESTIC" init --help 2>/dev/null | grep -q -- '--repository-version' && RESTIC_INIT+=(--repository-version 2)
RESTIC_BACKUP=()
"$RESTIC" backup --help 2>/dev/null | grep -q -- '--no-scan' && RESTIC_BACKUP+=(--no-scan)
"$RESTIC" init --repo "$RS_REPO" "${RESTIC_INIT[@]}" >"$LOGS/restic-init.log" 2>&1 || die "restic init failed (see $LOGS/restic-init.log)"

backup_both() { # backup_both SCENARIO
    run_timed "js-$1" "$JS" "${JS_BACKUP[@]}"
    repo_size "js-$1" "$JS_REPO"
    run_timed "rs-$1" "$RESTIC" --repo "$RS_REPO" backup "${RESTIC_BACKUP[@]}" "${RESTIC_EXCLUDES[@]}" "${RESTIC_PATHS[@]}"
    repo_size "rs-$1" "$RS_REPO"
}

# backup_warm SCENARIO: each tool backs up once untimed, then again, timed, with what
# that run brought into the page cache still there.
backup_warm() {
    "$JS" "${JS_BACKUP[@]}" >"$LOGS/js-$1-warmup.log" 2>&1
    NO_DROP=1 run_timed "js-$1" "$JS" "${JS_BACKUP[@]}"
    repo_size "js-$1" "$JS_REPO"
    "$RESTIC" --repo "$RS_REPO" backup "${RESTIC_BACKUP[@]}" "${RESTIC_EXCLUDES[@]}" "${RESTIC_PATHS[@]}" \
        >"$LOGS/rs-$1-warmup.log" 2>&1
    NO_DROP=1 run_timed "rs-$1" "$RESTIC" --repo "$RS_REPO" backup "${RESTIC_BACKUP[@]}" "${RESTIC_EXCLUDES[@]}" "${RESTIC_PATHS[@]}"
    repo_size "rs-$1" "$RS_REPO"
}

# The machine's limits on the same bytes, measured in this run (see the header).
LIMIT_COPY="$BENCH_DIR/limit-copy"
limit_read() {
    for p in "${RESTIC_PATHS[@]}"; do
        find "$p" -type f ! -name '*-wal' ! -name '*-shm' -print0
    done | xargs -0 -r -P4 -n256 cat >/dev/null
}
limit_copy() {
    rm -rf -- "$LIMIT_COPY" && mkdir -p "$LIMIT_COPY" || return 1
    for p in "${RESTIC_PATHS[@]}"; do cp -a "$p" "$LIMIT_COPY/" || return 1; done
    sync
}
run_timed limit-read bash -c "$(declare -p RESTIC_PATHS); $(declare -f limit_read); limit_read"
run_timed limit-copy bash -c "$(declare -p RESTIC_PATHS LIMIT_COPY); $(declare -f limit_copy); limit_copy"
rm -rf -- "$LIMIT_COPY"

backup_both cold

limit_disk() {
    local bytes
    bytes=$(du -sb "$JS_REPO/packs" | awk '{print $1}')
    find "$JS_REPO/packs" -type f -print0 |
        xargs -0 -r -n64 -P2 sh -c 'for f; do dd if="$f" of=/dev/null bs=1M iflag=direct status=none; done' _ &
    dd if=/dev/zero of="$LIMIT_COPY" bs=1M count=$((bytes >> 20)) oflag=direct conv=fsync status=none
    local rc=$?
    wait || rc=1
    rm -f -- "$LIMIT_COPY"
    return $rc
}
run_timed limit-disk bash -c "$(declare -p JS_REPO LIMIT_COPY); $(declare -f limit_disk); limit_disk"
backup_both no-change
backup_warm no-change-warm

log "applying a day of changes"
"$GEN" --out "$SRC" --layout "$LAYOUT" --seed "$((SEED + 1000))" --day-of-changes | tee "$LOGS/day.txt" >&2 \
    || die "gen_dataset --day-of-changes failed"
backup_both day

run_timed js-restore "$JS" --repo "$JS_REPO" restore latest --target "$BENCH_DIR/restore-jellysnap"
repo_size js-restore "$JS_REPO"
run_timed rs-restore "$RESTIC" --repo "$RS_REPO" restore latest --target "$BENCH_DIR/restore-restic"
repo_size rs-restore "$RS_REPO"

# --- report ------------------------------------------------------------------------------

val() { # val FILE [default]
    if [[ -s "$1" ]]; then cat "$1"; else echo "${2:-}"; fi
}
secs() { # secs NAME -> wall seconds, or FAIL
    if [[ "$(val "$TIMES/$1.rc" 1)" != 0 ]]; then echo FAIL; else val "$TIMES/$1.wall" "?"; fi
}
mb() { awk -v k="$1" 'BEGIN { if (k ~ /^[0-9]+$/) printf "%.0f", k / 1024; else print "?" }'; }
mib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9]+$/) printf "%.1f", b / 1048576; else print "?" }'; }
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a > 0) printf "%.2f", b / a; else print "-" }'
}
tree_stats() { # tree_stats DIR -> "N files, X MiB"
    if [[ -d "$1" ]]; then
        printf '%s files, %s MiB' "$(find "$1" -type f | wc -l)" "$(mib "$(du -sb "$1" | awk '{print $1}')")"
    else
        printf 'missing'
    fi
}

SRC_BYTES=$(du -sb "$SRC" | awk '{print $1}')
echo
echo "## jellysnap vs restic — ${SCALE_MIB} MiB $LAYOUT dataset"
echo
echo "- dataset: $(tree_stats "$SRC") in total (incl. cache/log that are not backed up); seed $SEED"
echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); page caches dropped between runs: $DROP_CACHES"
echo "- jellysnap: $("$JS" --version 2>/dev/null || echo '?'); restic: $("$RESTIC" version 2>/dev/null | head -n1)"
echo
LIM_READ=$(secs limit-read); LIM_COPY=$(secs limit-copy); LIM_DISK=$(secs limit-disk)
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a > 0) printf "%.0f%%", 100 * b / a; else print "-" }'; }
echo "| scenario | jellysnap s | restic s | ratio (restic/jellysnap) | jellysnap vs copy limit | jellysnap share of disk limit | jellysnap max RSS MB | restic max RSS MB | jellysnap repo MiB | restic repo MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for s in cold no-change no-change-warm day restore; do
    js=$(secs "js-$s"); rs=$(secs "rs-$s")
    lim=- disk=-
    [[ $s == cold || $s == restore ]] && lim=$(pct "$js" "$LIM_COPY") && disk=$(pct "$js" "$LIM_DISK")
    echo "| $s | $js | $rs | $(ratio "$js" "$rs") | $lim | $disk | $(mb "$(val "$TIMES/js-$s.rss" "?")") | $(mb "$(val "$TIMES/rs-$s.rss" "?")") | $(mib "$(val "$TIMES/js-$s.size" "?")") | $(mib "$(val "$TIMES/rs-$s.size" "?")") |"
done
echo
echo "- machine limits on the backed-up set, same run: read ${LIM_READ} s, copy (\`cp -a\` + \`sync\`) ${LIM_COPY} s;"
echo "  \"vs copy limit\" is the copy's time over jellysnap's (100% = as fast as a plain copy of the same files);"
echo "  disk limit (packs read while as many bytes are written, all O_DIRECT) ${LIM_DISK} s: \"share of disk limit\" is its time over jellysnap's"
echo
echo "- restored by jellysnap: $(tree_stats "$BENCH_DIR/restore-jellysnap"); by restic: $(tree_stats "$BENCH_DIR/restore-restic")"
# How the no-change snapshot stored the database (its capture reused, or captured again).
echo "- no-change database: $(grep -m1 -E '^ +database [^0-9]' "$LOGS/js-no-change.log" 2>/dev/null | sed 's/^ *//')"
# How the day's snapshot proved the changed database (its last rebuild brought up to date,
# or rebuilt whole).
echo "- day database: $(grep -m1 -E '^ +database [^0-9]' "$LOGS/js-day.log" 2>/dev/null | sed 's/^ *//')"
# The repository's local state holds the last proven rebuild of each database.
echo "- jellysnap repo size includes rebuilds/ (the database's last proven rebuild, local state): $(mib "$(du -sb "$JS_REPO/rebuilds" 2>/dev/null | cut -f1)") MiB"
echo "- source size: $(mib "$SRC_BYTES") MiB; logs: $LOGS (kept only with KEEP=1 or BENCH_DIR)"
echo "- repo size is \`du -sb\` after the step; restic's cache ($RESTIC_CACHE_DIR) is not counted."

if [[ "$KEEP" != 1 ]]; then
    rm -rf -- "$BENCH_DIR"/restore-*
fi

# --- database scenario: a >= 200 MiB jellyfin.db through a day of use, a VACUUM,
# both, and an EF-Core table rebuild; bytes added by each tool. DB_SCENARIO=0 skips it.
if [[ "${DB_SCENARIO:-1}" == 1 ]]; then
    echo
    BENCH_DIR="$BENCH_DIR/db" SKIP_BUILD=1 RESTIC="$RESTIC" bash "$REPO_ROOT/benches/db.sh"
fi
