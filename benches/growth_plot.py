#!/usr/bin/env python3
"""Plot and summarise the CSV benches/growth.sh writes (standard library only).

usage: growth_plot.py CSV OUT_SVG

Writes an SVG with six panels against the number of snapshots taken (backup time;
repository and data size; snapshots/forget/gc time; peak RSS; file and pack counts; gc's
work) and prints a markdown
summary: first/last/median of each series and a growth check of each series against the
data's own growth.
"""

import csv
import math
import statistics
import sys

MIB = 1048576.0


def load(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append(r)
    return rows


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def series(rows, op, col, scale=1.0, ok_only=True):
    """[(snapshots_taken, value)] of column `col` in the rows of `op`."""
    out = []
    for r in rows:
        if r["op"] != op or (ok_only and r["rc"] != "0"):
            continue
        v = num(r[col])
        if v is not None:
            out.append((int(r["snapshots_taken"]), v / scale))
    return out


# --- summary -------------------------------------------------------------------------------


def window(n):
    """Samples compared at each end: 50 for the hourly series, a quarter for the daily."""
    return max(1, min(50, n // 4))


def ends(vals):
    """Mean and median of the first and last `window` samples, and the ratios last/first."""
    w = window(len(vals))
    a, b = vals[:w], vals[-w:]
    ma, mb = statistics.mean(a), statistics.mean(b)
    da, db = statistics.median(a), statistics.median(b)
    return {
        "w": w, "mean_first": ma, "mean_last": mb, "median_first": da, "median_last": db,
        "mean_ratio": mb / ma if ma > 0 else float("inf"),
        "median_ratio": db / da if da > 0 else float("inf"),
    }


def fmt(v, unit):
    if unit == "MiB":
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    if unit == "MB":
        return f"{v:.0f}"
    if unit in ("s", "s ref"):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return f"{v:.0f}"


def op_series(rows, op, col, scale=1.0, hourly=False):
    return [v for x, v in series(rows, op, col, scale) if not hourly or x > 1]


# A mean or median of a command's time or RSS on a shared, busy machine may move this much
# without anything having grown; and /usr/bin/time counts CPU in 10 ms steps, so a change
# must also exceed an absolute floor (s for times, MB for RSS).
TOLERANCE = 0.15
FLOOR = {"s": 0.03, "MB": 3.0}


def summary(rows):
    out = []
    b_all = series(rows, "backup", "wall_s")
    data = op_series(rows, "backup", "data_bytes", MIB)
    repo = op_series(rows, "backup", "repo_bytes", MIB)
    if not data or len(b_all) < 3:
        return "not enough rows to summarise\n"
    cold = [v for x, v in b_all if x == 1]
    cold_cpu = [v for x, v in series(rows, "backup", "cpu_s") if x == 1]
    cold_r = [v for x, v in series(rows, "backup", "max_rss_kb", 1000) if x == 1]
    # The data grows in bytes, in files and in database size; the cost of a backup follows
    # each of them, so a series is held to the fastest of the three.
    measures = [("bytes", ends(data))]
    for label, col, scale in (("files", "data_files", 1.0), ("database", "db_bytes", MIB)):
        vals = op_series(rows, "backup", col, scale)
        if vals:
            measures.append((label, ends(vals)))
    d_label, d = max(measures, key=lambda m: m[1]["mean_ratio"])
    limit = d["mean_ratio"] * (1 + TOLERANCE)

    # The first backup reads everything: the hourly series start at the second snapshot.
    table = [("backup wall time", op_series(rows, "backup", "wall_s", hourly=True), "s"),
             ("backup CPU time", op_series(rows, "backup", "cpu_s", hourly=True), "s"),
             ("backup peak RSS", op_series(rows, "backup", "max_rss_kb", 1000, hourly=True), "MB")]
    for op in ("forget", "gc", "snapshots"):
        table += [(f"{op} wall time", op_series(rows, op, "wall_s"), "s"),
                  (f"{op} CPU time", op_series(rows, op, "cpu_s"), "s"),
                  (f"{op} peak RSS", op_series(rows, op, "max_rss_kb", 1000), "MB")]
    files = op_series(rows, "backup", "data_files")
    db = op_series(rows, "backup", "db_bytes", MIB)
    table += [("new stored per backup", op_series(rows, "backup", "new_stored_bytes", MIB, hourly=True), "MiB"),
              ("data dir size", data, "MiB"),
              ("files backed up", files, "files"),
              ("database dump size", db, "MiB"),
              ("repository size (after backup)", repo, "MiB"),
              ("repository files (after backup)", op_series(rows, "backup", "repo_files"), "files"),
              ("data packs (after backup)", op_series(rows, "backup", "data_packs"), "files"),
              ("tree packs (after backup)", op_series(rows, "backup", "tree_packs"), "files"),
              ("index (RocksDB) size", op_series(rows, "backup", "index_bytes", MIB), "MiB"),
              ("reference CPU work (wall)", op_series(rows, "reference", "wall_s"), "s ref"),
              ("reference CPU work (CPU)", op_series(rows, "reference", "cpu_s"), "s ref"),
              ("packs (gc's count)", op_series(rows, "gc", "gc_packs"), "packs"),
              ("MiB repacked by gc", op_series(rows, "gc", "gc_bytes_repacked", MIB), "MiB"),
              ("MiB freed by gc", op_series(rows, "gc", "gc_bytes_freed", MIB), "MiB")]

    out.append(f"{len(b_all)} snapshots taken. First backup (everything read): {cold[0]:.3f} s wall, "
               f"{cold_cpu[0]:.2f} s CPU, peak RSS {cold_r[0]:.0f} MB; the hourly series below start at "
               f"the second snapshot. The forget/gc/snapshots series have one sample per 24 snapshots.\n"
               if cold else "")
    out.append("| series | unit | first | last | median | min | max | mean first N | mean last N | N "
               "| last/first (means) | last/first (medians) |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    verdicts = []
    for name, vals, unit in table:
        if not vals:
            continue
        e = ends(vals)
        out.append(
            f"| {name} | {unit} | {fmt(vals[0], unit)} | {fmt(vals[-1], unit)} | "
            f"{fmt(statistics.median(vals), unit)} | {fmt(min(vals), unit)} | {fmt(max(vals), unit)} | "
            f"{fmt(e['mean_first'], unit)} | {fmt(e['mean_last'], unit)} | {e['w']} | "
            f"{e['mean_ratio']:.2f} | {e['median_ratio']:.2f} |")
        if unit in ("s", "MB"):
            verdicts.append((name, e, unit))
    out.append("")
    grew = ", ".join(f"{label} {e['mean_ratio']:.3f}x ({e['mean_first']:.1f} -> {e['mean_last']:.1f})"
                     for label, e in measures)
    out.append(f"Growth check. Over the means of its first and last {d['w']} samples the data grew: "
               f"{grew}; the fastest ({d_label}, {d['mean_ratio']:.3f}x) is the yardstick. A time or RSS "
               f"series grew faster than the data when both its mean ratio and its median ratio "
               f"(last N over first N) exceed {limit:.3f}x (the data's growth plus {TOLERANCE:.0%} for "
               f"the noise of a shared machine) and its median rose by more than {FLOOR['s']} s "
               f"or {FLOOR['MB']:.0f} MB (time -v counts CPU in 10 ms steps).")
    kept = [(int(r["snapshots_taken"]), num(r["snapshots_listed"])) for r in rows
            if r["op"] == "snapshots" and r["rc"] == "0" and num(r["snapshots_listed"])]
    k = ends([v for _, v in kept]) if kept else None
    if k:
        out.append(f"The number of snapshots kept after forget grew {k['mean_ratio']:.3f}x over the same "
                   f"windows ({k['mean_first']:.1f} -> {k['mean_last']:.1f}): the retention fills its "
                   f"daily and weekly slots, so forget/gc/snapshots see more snapshots at the end.")
    ref = ends(op_series(rows, "reference", "cpu_s")) if op_series(rows, "reference", "cpu_s") else None
    if ref:
        out.append(f"The reference CPU work (the same every day) took {ref['mean_ratio']:.3f}x the CPU time "
                   f"at the end ({ref['mean_first']:.3f} -> {ref['mean_last']:.3f} s): how much the machine's "
                   f"load alone moved the times.")
    out.append("")
    faster_any = []
    for name, e, unit in verdicts:
        rose = e["median_last"] - e["median_first"]
        faster = e["mean_ratio"] > limit and e["median_ratio"] > limit and rose > FLOOR[unit]
        if faster:
            faster_any.append(name)
        vs_kept = ""
        if ref and name.endswith("CPU time"):
            vs_kept += f"; over the reference's {ref['mean_ratio']:.3f}x: {e['mean_ratio'] / ref['mean_ratio']:.3f}"
        if k and not name.startswith("backup"):
            vs_kept += f"; vs the snapshots kept ({k['mean_ratio']:.3f}x): {e['mean_ratio'] / k['mean_ratio']:.3f}"
        out.append(f"- {name}: {e['mean_ratio']:.3f}x (means), {e['median_ratio']:.3f}x (medians), "
                   f"median {fmt(e['median_first'], unit)} -> {fmt(e['median_last'], unit)} {unit}{vs_kept} — "
                   f"{'GREW FASTER THAN THE DATA' if faster else 'no faster than the data'}")

    # Counts of files in the repository: each backup writes a pack or two; gc removes them
    # only when they are dead or repacked. Held to the data dir's file count, at their peak.
    out.append("")
    f_first, f_last = files[0], files[-1]
    f_ratio = max(files) / f_first
    for name, col, op in (("repository files", "repo_files", "backup"), ("data packs", "data_packs", "backup"),
                          ("tree packs", "tree_packs", "backup"), ("index (RocksDB) MiB", "index_bytes", "backup")):
        pts = series(rows, op, col, MIB if col == "index_bytes" else 1.0)
        pts = [q for q in pts if q[0] > 1]
        if not pts or pts[0][1] <= 0:
            continue
        peak = max(pts, key=lambda q: q[1])
        ratio = peak[1] / pts[0][1]
        faster = ratio > f_ratio * (1 + TOLERANCE) and col != "index_bytes"
        if faster:
            faster_any.append(name)
        out.append(f"- {name}: {pts[0][1]:.{1 if col == 'index_bytes' else 0}f} at snapshot {pts[0][0]}, "
                   f"peak {peak[1]:.{1 if col == 'index_bytes' else 0}f} at {peak[0]} ({ratio:.2f}x), "
                   f"{pts[-1][1]:.{1 if col == 'index_bytes' else 0}f} at {pts[-1][0]}; the data dir's files "
                   f"{f_first:.0f} -> peak {max(files):.0f} ({f_ratio:.2f}x) -> {f_last:.0f}"
                   + (" — GREW FASTER THAN THE DATA" if faster else ""))

    # The repository: its growth against what the data and the history kept explain.
    listed = [r for r in rows if r["op"] == "snapshots" and r["rc"] == "0" and num(r["stored_bytes"])]
    removed = (num(rows[-1].get("removed_bytes")) or 0.0) / MIB
    added = sum(op_series(rows, "backup", "new_stored_bytes", MIB, hourly=True))
    growth = repo[-1] - repo[0]
    out.append("")
    out.append(f"- repository {repo[0]:.1f} -> {repo[-1]:.1f} MiB ({repo[-1] / repo[0]:.3f}x) while the "
               f"data dir went {data[0]:.1f} -> {data[-1]:.1f} MiB ({data[-1] / data[0]:.3f}x): repository / "
               f"data {repo[0] / data[0]:.3f} -> {repo[-1] / data[-1]:.3f}.")
    out.append(f"- the repository grew {growth:.1f} MiB: the data's own growth is {data[-1] - data[0]:.1f} MiB; "
               f"{removed:.1f} MiB of files were deleted or overwritten during the run, which the repository "
               f"keeps as long as a snapshot that holds them is kept (14 days, then a weekly or monthly "
               f"snapshot); the hourly backups stored {added:.1f} MiB in all (new files, rewritten images, "
               f"database versions), of which gc reclaimed what no kept snapshot holds.")
    if len(listed) >= 2:
        g0, g1 = listed[0], listed[-1]
        o0 = num(g0["repo_bytes"]) / num(g0["stored_bytes"])
        o1 = num(g1["repo_bytes"]) / num(g1["stored_bytes"])
        out.append(f"- after each forget + gc: repository on disk / stored chunk bytes (`stats`) "
                   f"{o0:.4f} at snapshot {g0['snapshots_taken']} -> {o1:.4f} at {g1['snapshots_taken']} "
                   f"(the repository's own structures: index, trees, snapshot records, unused pack space).")
        if kept:
            out.append(f"- snapshots kept after each forget: {kept[0][1]:.0f} -> {kept[-1][1]:.0f} "
                       f"(max {max(v for _, v in kept):.0f}).")
    out.append("")
    out.append("Verdict: " + (f"GREW FASTER THAN THE DATA: {', '.join(faster_any)} (see above)." if faster_any
                              else "no time or RSS series grew faster than the data."))
    return "\n".join(out) + "\n"


# --- SVG -----------------------------------------------------------------------------------


def nice_step(span, n):
    raw = span / max(1, n)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    step = nice_step(hi - lo, n)
    start = math.floor(lo / step) * step
    out = []
    v = start
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    if out[-1] < hi:
        out.append(round(out[-1] + step, 10))
    return out


def tick_label(v):
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if v == int(v):
        return str(int(v))
    return f"{v:g}"


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


class Panel:
    W, H = 560, 300
    L, R, T, B = 70, 20, 36, 46

    def __init__(self, x0, y0, title, ylabel, xmax, ymax, ymin=0.0):
        self.x0, self.y0 = x0, y0
        self.title, self.ylabel = title, ylabel
        self.xt = ticks(0, xmax, 6)
        self.yt = ticks(ymin, ymax, 5)
        self.xmin, self.xmax = self.xt[0], self.xt[-1]
        self.ymin, self.ymax = self.yt[0], self.yt[-1]
        self.parts = []
        self.legend = []

    def px(self, x):
        w = self.W - self.L - self.R
        return self.x0 + self.L + (x - self.xmin) / (self.xmax - self.xmin) * w

    def py(self, y):
        h = self.H - self.T - self.B
        return self.y0 + self.T + h - (y - self.ymin) / (self.ymax - self.ymin) * h

    def points(self, pts, color, label, r=1.6):
        for x, y in pts:
            self.parts.append(f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="{r}" '
                              f'fill="{color}" fill-opacity="0.55"/>')
        self.legend.append(("dot", color, label))

    def line(self, pts, color, label, markers=False, dash=None):
        if not pts:
            return
        d = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in pts)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.8"{extra}/>')
        if markers:
            for x, y in pts:
                self.parts.append(f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="2.6" fill="{color}"/>')
        self.legend.append(("line", color, label))

    def render(self):
        o = []
        x0, y0, W, H, L, R, T, B = self.x0, self.y0, self.W, self.H, self.L, self.R, self.T, self.B
        o.append(f'<text x="{x0 + L}" y="{y0 + 20}" font-size="14" font-weight="bold">{esc(self.title)}</text>')
        # grid and ticks
        for v in self.yt:
            y = self.py(v)
            o.append(f'<line x1="{x0 + L}" y1="{y:.1f}" x2="{x0 + W - R}" y2="{y:.1f}" stroke="#e4e4e4"/>')
            o.append(f'<text x="{x0 + L - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{tick_label(v)}</text>')
        for v in self.xt:
            x = self.px(v)
            o.append(f'<line x1="{x:.1f}" y1="{y0 + T}" x2="{x:.1f}" y2="{y0 + H - B}" stroke="#f0f0f0"/>')
            o.append(f'<text x="{x:.1f}" y="{y0 + H - B + 16}" font-size="11" text-anchor="middle">{tick_label(v)}</text>')
        o.append(f'<rect x="{x0 + L}" y="{y0 + T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#888"/>')
        o.append(f'<text x="{x0 + L + (W - L - R) / 2}" y="{y0 + H - 8}" font-size="12" '
                 f'text-anchor="middle">snapshots taken</text>')
        cy = y0 + T + (H - T - B) / 2
        o.append(f'<text x="{x0 + 16}" y="{cy}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 {x0 + 16} {cy})">{esc(self.ylabel)}</text>')
        o.extend(self.parts)
        # legend, top right inside the plot
        lw = 8 + max((len(lbl) for _, _, lbl in self.legend), default=0) * 6.2 + 26
        lx = x0 + W - R - lw - 6
        ly = y0 + T + 6
        if self.legend:
            o.append(f'<rect x="{lx}" y="{ly}" width="{lw}" height="{8 + 16 * len(self.legend)}" '
                     f'fill="white" fill-opacity="0.85" stroke="#ccc"/>')
        for i, (kind, color, label) in enumerate(self.legend):
            yy = ly + 14 + 16 * i
            if kind == "dot":
                o.append(f'<circle cx="{lx + 15}" cy="{yy - 4}" r="3" fill="{color}"/>')
            else:
                o.append(f'<line x1="{lx + 6}" y1="{yy - 4}" x2="{lx + 24}" y2="{yy - 4}" stroke="{color}" stroke-width="2"/>')
            o.append(f'<text x="{lx + 30}" y="{yy}" font-size="11">{esc(label)}</text>')
        return o


def rolling_median(pts, k=24):
    out = []
    for i in range(len(pts)):
        win = [v for _, v in pts[max(0, i - k + 1): i + 1]]
        out.append((pts[i][0], statistics.median(win)))
    return out


def svg(rows, path):
    b_t = series(rows, "backup", "wall_s")
    hourly = [p for p in b_t if p[0] > 1]
    xmax = max((x for x, _ in b_t), default=1)
    panels = []

    # The first backup (reads everything) is left out of the hourly panels' scale.
    ymax = max((v for _, v in hourly), default=1)
    p = Panel(0, 40, "Backup time (every hourly snapshot)", "wall time [s]", xmax, ymax * 1.15)
    p.points(hourly, COLORS[0], "wall, each backup")
    p.line(rolling_median(hourly), COLORS[1], "wall, median of last 24")
    cpu = [q for q in series(rows, "backup", "cpu_s") if q[0] > 1]
    p.line(rolling_median(cpu), COLORS[2], "CPU (user+sys), median of last 24")
    panels.append(p)

    data = series(rows, "backup", "data_bytes", MIB)
    repo = series(rows, "backup", "repo_bytes", MIB)
    stored = series(rows, "snapshots", "stored_bytes", MIB)
    sizes = [v for _, v in data + repo + stored] or [1]
    # Not from zero: growth of a few percent would be a flat line.
    lo, hi = min(sizes), max(sizes)
    pad = max((hi - lo) * 0.15, hi * 0.01)
    p = Panel(Panel.W, 40, "Repository and data size", "size [MiB]", xmax, hi + 2 * pad,
              ymin=max(0.0, lo - pad))
    p.line(repo, COLORS[0], "repository (du -sb)")
    p.line(stored, COLORS[2], "stored chunks after gc (stats)", markers=True, dash="5,3")
    p.line(data, COLORS[1], "data dir (du -sb)")
    panels.append(p)

    ops = [("snapshots", COLORS[0]), ("forget", COLORS[2]), ("gc", COLORS[3])]
    vals = [v for op, _ in ops + [("reference", "")] for _, v in series(rows, op, "wall_s")]
    p = Panel(0, 40 + Panel.H, "snapshots / forget / gc time (every 24th)", "wall time [s]",
              xmax, max(vals or [1]) * 1.3)
    for op, c in ops:
        p.line(series(rows, op, "wall_s"), c, op, markers=True)
    p.line(series(rows, "reference", "wall_s"), "#777777", "reference CPU work", markers=True, dash="4,3")
    panels.append(p)

    rss_b = [q for q in series(rows, "backup", "max_rss_kb", 1000) if q[0] > 1]
    vals = [v for _, v in rss_b] + [v for op, _ in ops for _, v in series(rows, op, "max_rss_kb", 1000)]
    p = Panel(Panel.W, 40 + Panel.H, "Peak RSS", "max RSS [MB]", xmax, max(vals or [1]) * 1.3)
    p.points(rss_b, COLORS[1], "backup")
    for op, c in ops:
        p.line(series(rows, op, "max_rss_kb", 1000), c, op, markers=True)
    panels.append(p)

    counts = [("data dir files (backed up)", series(rows, "backup", "data_files"), COLORS[1], False),
              ("repository files", series(rows, "backup", "repo_files"), COLORS[0], False),
              ("data packs", series(rows, "backup", "data_packs"), COLORS[2], False),
              ("tree packs", series(rows, "backup", "tree_packs"), COLORS[3], False)]
    vals = [v for _, pts, _, _ in counts for _, v in pts]
    p = Panel(0, 40 + 2 * Panel.H, "Files: data dir and repository", "count", xmax, max(vals or [1]) * 1.7)
    for label, pts, c, m in counts:
        p.line(pts, c, label, markers=m)
    panels.append(p)

    work = [("repacked by gc", series(rows, "gc", "gc_bytes_repacked", MIB), COLORS[3]),
            ("freed by gc", series(rows, "gc", "gc_bytes_freed", MIB), COLORS[4])]
    vals = [v for _, pts, _ in work for _, v in pts]
    p = Panel(Panel.W, 40 + 2 * Panel.H, "gc's work (every 24th)", "size [MiB]", xmax, max(vals or [1]) * 1.3)
    for label, pts, c in work:
        p.line(pts, c, label, markers=True)
    panels.append(p)

    width, height = 2 * Panel.W, 40 + 3 * Panel.H + 10
    cold = [v for x, v in b_t if x == 1]
    title = (f"jellysnap: {len(b_t)} hourly snapshots of a slowly changing Jellyfin data dir; "
             f"forget + gc every 24th")
    sub = ("page caches not dropped (warm); times move with the machine's load; the first backup"
           + (f" ({cold[0]:.2f} s)" if cold else "") + " is left out of the hourly panels")
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{width / 2}" y="20" font-size="15" font-weight="bold" text-anchor="middle">{esc(title)}</text>',
         f'<text x="{width / 2}" y="36" font-size="11" fill="#555" text-anchor="middle">{esc(sub)}</text>']
    for p in panels:
        o.extend(p.render())
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    rows = load(argv[1])
    svg(rows, argv[2])
    sys.stdout.write(summary(rows))
    sys.stdout.write(f"\nplot: {argv[2]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
