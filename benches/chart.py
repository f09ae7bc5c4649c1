"""Benchmark charts: each loop's CPU per operation relative to uvloop, drawn from saved results.

Role: the one place the benchmark pictures are drawn. micro.py, net.py and children.py save
their results as JSON (benches/results/ by default, git-ignored) and call `save` here, which
writes the JSON and, when matplotlib is installed, a PNG and an SVG beside it. The same charts
can be drawn again at any time from saved results:

    python benches/chart.py benches/results/micro.json                 # -> micro.png, micro.svg
    python benches/chart.py micro.json net.json -o benches/results/demo   # one figure, two panels

The picture: per row, one horizontal bar per loop on a log scale, starting at uvloop (1x): a bar
to the left is less CPU per operation than uvloop, to the right more. oxloop is the highlighted
bar and carries its ratio in words; on network rows a black tick marks the pure-Rust floor (the
same server with no Python: the syscalls' own cost; on the TLS rows, that echo over the same
OpenSSL library). The caption names the machine, the Python,
each loop's version, the date and how the figures were taken.

Invariants:
- Only numbers from a results file are drawn; nothing here measures or types in a figure.
- matplotlib is optional (the `dev` extra): without it the scripts print their tables, save the
  JSON and say the chart was skipped; `import chart` never imports matplotlib.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import statistics
import sys
import textwrap
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
BASELINE = "uvloop"
FLOOR = "floor"

# What each script's results hold: the metric charted (CPU time of the timed region, or the
# server's CPU per message) and the panel's title.
KINDS: dict[str, dict[str, str]] = {
    "micro": {
        "metric": "cpu",
        "title": "Loop primitives (benches/micro.py): CPU time per row",
    },
    "net": {
        "metric": "cpu_per",
        "title": "Echo and HTTP servers (benches/net.py): server CPU per message",
    },
    "tls": {
        "metric": "cpu_per",
        "title": "TLS echo (benches/net.py --tls): server CPU per message",
    },
    "subprocess": {
        "metric": "cpu",
        "title": "Subprocesses and pipes (benches/children.py): CPU time per row",
    },
}

# Muted colours for the other loops, one strong colour for oxloop (the one a reader looks for).
COLOURS = {"asyncio": "#9e9e9e", "rloop": "#7fa7cf", "rsloop": "#8fbf8f", "oxloop": "#e8590c"}
OTHER_COLOUR = "#b39ddb"
# The width of oxloop's ratio label ("3.40x faster", 8.5 pt bold) and its gap, in inches.
LABEL_INCHES = 1.05


def kind_of(doc: dict[str, Any]) -> str:
    """Which script wrote `doc`: meta['bench'], or for older files, what its results hold."""
    bench = doc.get("meta", {}).get("bench")
    if bench in KINDS:
        return bench
    results = [res for row in doc["rows"].values() for res in row["results"].values()]
    if any("cpu_per" in res for res in results) or FLOOR in doc["meta"].get("probes", {}):
        return "net"
    if any("children" in res for res in results):
        return "subprocess"
    return "micro"


def ratio_words(r: float) -> str:
    """A CPU ratio (loop / uvloop) in the tables' words: '1.49x faster', 'same'."""
    if 0.995 <= r < 1.005:
        return "same as uvloop"
    return f"{1 / r:.2f}x faster" if r < 1 else f"{r:.2f}x slower"


def ratios(doc: dict[str, Any]) -> tuple[list[str], list[str], list[dict[str, float | None]]]:
    """(loops drawn as bars, row labels, per row {loop: CPU / uvloop's CPU or None}).

    A cell that is not ok (n/a, FAIL, ERROR, TIMEOUT), or a row whose uvloop cell is not, gets
    None: no bar, and the cell's status written where the bar would be.
    """
    metric = KINDS[kind_of(doc)]["metric"]
    loops = list(doc["meta"]["probes"])
    bars = [name for name in loops if name not in (BASELINE, FLOOR)]
    labels, per_row = [], []
    for row in doc["rows"].values():
        labels.append(row["label"])
        base = row["results"].get(BASELINE, {"status": "n/a"})
        cells: dict[str, float | None] = {}
        for name in loops:
            res = row["results"].get(name, {"status": "n/a"})
            ok = res.get("status") == "ok" and base.get("status") == "ok" and base[metric] > 0
            cells[name] = res[metric] / base[metric] if ok and res[metric] > 0 else None
        per_row.append(cells)
    return bars, labels, per_row


def _status(doc: dict[str, Any], row_index: int, name: str) -> str:
    row = list(doc["rows"].values())[row_index]
    status = row["results"].get(name, {"status": "n/a"}).get("status", "n/a")
    return "no uvloop result" if status == "ok" else status


def caption(doc: dict[str, Any]) -> str:
    """Machine, versions, date, method and noise of one results file, wrapped to the figure."""
    meta = doc["meta"]
    m = meta["machine"]
    versions = []
    for name, p in meta["probes"].items():
        if name == "asyncio":
            continue
        if name == FLOOR:
            # net.py's floor is "mio"; its TLS table's floor adds the OpenSSL it loads.
            versions.append(
                f"floor: Rust ({p.get('version') or 'mio'})" if p.get("ok") else "floor n/a"
            )
        elif p.get("ok"):
            extra = f" (git {meta.get('git', '?')})" if name == "oxloop" else ""
            versions.append(f"{name} {p['version']}{extra}")
        else:
            versions.append(f"{name} n/a")
    date = meta.get("date") or meta["probes"].get("oxloop", {}).get("built", "date unknown")
    rounds = meta.get("rounds", 1)
    quick = meta.get("quick") or meta.get("mode") == "quick"
    metric = KINDS[kind_of(doc)]["metric"]
    spreads = [
        res[f"{metric}_spread"]
        for row in doc["rows"].values()
        for res in row["results"].values()
        if res.get("status") == "ok" and f"{metric}_spread" in res
    ]
    if rounds > 1 and spreads:
        noise = (
            f"median of {rounds} rounds, spread over rounds {statistics.median(spreads):.0%}"
            f" typically, worst {max(spreads):.0%}"
        )
    else:
        noise = "1 round, so no spread measured"
    when = f"{date} UTC" if meta.get("date") else date
    try:
        busy = float(str(m["load_avg"]).split()[0]) >= 0.5 * float(m["cores"])
    except (ValueError, IndexError, TypeError):
        busy = False
    if busy:
        warning = (
            "The machine was busy with other work, so moderate noise is expected (CPU time moves"
            " far less with load than wall time, but a few tens of percent between two bars can"
            " still be noise)."
        )
    else:
        warning = "CPU time moves far less with load than wall time; a few percent is still noise."
    text = (
        f"{m['cpu']}, {m['cores']} cores (load average at start {m['load_avg']});"
        f" {m['python']}; {', '.join(versions)}. Measured {when}"
        f"{', a quick run (small N)' if quick else ''}; CPU time, each sample a fresh process,"
        f" loops interleaved; {noise}. {warning}"
    )
    # 138 characters of 8 pt fill the 9-inch figure's width.
    return "\n".join(textwrap.wrap(text, 138))


def _x_range(per_row: list[dict[str, float | None]], axes_inches: float) -> tuple[float, float]:
    """The x limits: every bar, and room beside the 1x line for oxloop's labels.

    On a log axis a label of fixed width covers a fixed share of log(hi / lo), so the limits
    that leave it room are found by a few rounds of widening.
    """
    values = [v for cells in per_row for v in cells.values() if v is not None] or [1.0]
    ox = [cells["oxloop"] for cells in per_row if cells.get("oxloop") is not None]
    lo, hi = min(min(values), 0.5) / 1.3, max(max(values), 2.0) * 1.3
    share = LABEL_INCHES / axes_inches  # of the axis' width one label needs
    for _ in range(4):
        span = math.log(hi / lo)
        room = math.exp(share * span)
        # A bar left of 1x has its label right of it, and the other way round.
        hi = max(hi, room * 1.04 if any(r < 1 for r in ox) else hi)
        lo = min(lo, 1 / (room * 1.04) if any(r >= 1 for r in ox) else lo)
    return lo, hi


def _draw_panel(ax: Any, doc: dict[str, Any], title: str, xlim: tuple[float, float]) -> None:
    bars, labels, per_row = ratios(doc)
    n_bars = len(bars)
    height = 0.8 / max(n_bars, 1)
    lo, hi = xlim
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.axvspan(lo, 1.0, color="#eef6ee", zorder=0)
    for i, cells in enumerate(per_row):
        for j, name in enumerate(bars):
            y = i - 0.4 + height * (j + 0.5)
            r = cells.get(name)
            colour = COLOURS.get(name, OTHER_COLOUR)
            if r is None:
                ax.text(
                    1.03,
                    y,
                    _status(doc, i, name),
                    va="center",
                    ha="left",
                    fontsize=7.5,
                    color="#666666",
                )
                continue
            ax.barh(
                y,
                r - 1.0,
                left=1.0,
                height=height * 0.92,
                color=colour,
                zorder=2,
                edgecolor="#7a2e00" if name == "oxloop" else "none",
                linewidth=0.6,
            )
            if name == "oxloop":
                # Beside the 1x line, on the side the bar leaves empty: the labels form a
                # column there, and no bar end or floor tick runs through them.
                x, ha = (1.04, "left") if r < 1 else (1 / 1.04, "right")
                ax.text(
                    x,
                    y,
                    ratio_words(r),
                    va="center",
                    ha=ha,
                    fontsize=8.5,
                    fontweight="bold",
                    color="#7a2e00",
                    zorder=4,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
                )
        floor = cells.get(FLOOR)
        if floor is not None:
            ax.plot(
                [floor, floor],
                [i - 0.45, i + 0.45],
                color="black",
                linewidth=2.2,
                zorder=3,
                solid_capstyle="butt",
            )
    ax.axvline(1.0, color="black", linewidth=1.0, zorder=3)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=10)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first row at the top, as in the table
    ticks = [2.0**k for k in range(-8, 9) if lo <= 2.0**k <= hi]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}x" for t in ticks], fontsize=9)
    ax.xaxis.set_minor_locator(_no_ticks())
    ax.grid(axis="x", color="#dddddd", linewidth=0.6, zorder=1)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=10.5, loc="left", fontweight="bold", pad=16)
    ax.text(
        0.0,
        1.0,
        "\u2190 less CPU than uvloop",
        transform=ax.transAxes,
        fontsize=8,
        color="#2e7d32",
        ha="left",
        va="bottom",
    )
    ax.text(
        1.0,
        1.0,
        "more CPU than uvloop \u2192",
        transform=ax.transAxes,
        fontsize=8,
        color="#b71c1c",
        ha="right",
        va="bottom",
    )


def _no_ticks() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def render(docs: list[dict[str, Any]], out_base: str) -> list[str]:
    """Draw one figure, a panel per results document, to OUT_BASE.png and OUT_BASE.svg.

    Raises ImportError when matplotlib is not installed.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    captions = [caption(doc) for doc in docs]
    if len(set(captions)) == 1:
        captions = captions[:1]  # one machine, one run: say it once
    cap_text = "\n\n".join(captions)
    cap_lines = cap_text.count("\n") + 1
    # Laid out in inches: 9 inches wide with 8-10 pt text stays legible when a page shows the
    # picture ~850 px wide (the README's column).
    width, left_in, right_in = 9.0, 2.75, 0.25
    legend_h, title_h, ticks_h, xlabel_h = 0.35, 0.55, 0.35, 0.25
    cap_h = 0.15 + 0.155 * cap_lines
    # A row holds one bar per loop (asyncio, rloop, oxloop: 3), each ~0.17 inch thick.
    row_h = 0.1 + 0.18 * max(len(ratios(doc)[0]) for doc in docs)
    panel_h = [title_h + row_h * len(doc["rows"]) + ticks_h for doc in docs]
    fig_h = legend_h + sum(panel_h) + xlabel_h + cap_h
    fig = Figure(figsize=(width, fig_h), dpi=150)
    bar_names: list[str] = []
    has_floor = tls_floor = False
    top = fig_h - legend_h
    # One x range for every panel: the 1x line and the scale line up from panel to panel.
    ranges = [_x_range(ratios(doc)[2], width - left_in - right_in) for doc in docs]
    xlim = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    for k, doc in enumerate(docs):
        axes_h = row_h * len(doc["rows"])
        bottom = top - title_h - axes_h
        ax = fig.add_axes(
            (left_in / width, bottom / fig_h, (width - left_in - right_in) / width, axes_h / fig_h)
        )
        _draw_panel(ax, doc, KINDS[kind_of(doc)]["title"], xlim)
        bars, _, per_row = ratios(doc)
        bar_names += [b for b in bars if b not in bar_names]
        floor_here = any(cells.get(FLOOR) is not None for cells in per_row)
        has_floor = has_floor or floor_here
        tls_floor = tls_floor or (floor_here and kind_of(doc) == "tls")
        if k == len(docs) - 1:
            ax.set_xlabel(
                "CPU per operation relative to uvloop (log scale; uvloop = 1x)", fontsize=9
            )
        top -= panel_h[k]
    handles: list[Any] = [
        Patch(color=COLOURS.get(name, OTHER_COLOUR), label=name) for name in bar_names
    ]
    handles.append(Line2D([], [], color="black", linewidth=1.0, label="uvloop (1x)"))
    if has_floor:
        # The TLS floor is Rust over the OpenSSL the Python servers use: not pure Rust.
        label = "Rust floor, no Python (TLS: the same OpenSSL)" if tls_floor else "pure-Rust floor"
        handles.append(Line2D([], [], color="black", linewidth=2.2, label=label))
    legend = fig.legend(
        handles=handles,
        loc="upper center",
        ncol=len(handles),
        frameon=False,
        fontsize=9,
        bbox_to_anchor=(0.5, 1.0),
    )
    for text in legend.get_texts():
        if text.get_text() == "oxloop":
            text.set_fontweight("bold")
    fig.text(
        0.12 / width,
        0.1 / fig_h,
        cap_text,
        fontsize=8,
        color="#444444",
        ha="left",
        va="bottom",
        linespacing=1.4,
    )
    paths = []
    for ext in ("png", "svg"):
        path = f"{out_base}.{ext}"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # svg.fonttype none: text stays text (small files, selectable); PNG at 150 dpi. No
        # date and fixed ids in the SVG: the same results give the same files (committed ones
        # change only when the results do).
        with _rc({"svg.fonttype": "none", "svg.hashsalt": "oxloop"}):
            fig.savefig(
                path,
                dpi=150 if ext == "png" else None,
                facecolor="white",
                metadata={"Date": None} if ext == "svg" else None,
            )
        paths.append(path)
    return paths


class _rc:
    """matplotlib.rc_context without importing pyplot."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def __enter__(self) -> None:
        import matplotlib

        self._ctx = matplotlib.rc_context(self.params)
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def chart_or_skip(docs: list[dict[str, Any]], out_base: str) -> list[str]:
    """render(), or a line saying why the chart was skipped (matplotlib missing)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("chart   : skipped (matplotlib is not installed; pip install matplotlib)")
        return []
    paths = render(docs, out_base)
    print(f"chart   : {' '.join(_rel(p) for p in paths)}")
    return paths


def save(doc: dict[str, Any], json_path: str | None, bench: str, chart: bool = True) -> None:
    """Write `doc` to json_path (default benches/results/BENCH.json) and its chart beside it."""
    path = json_path or os.path.join(RESULTS_DIR, f"{bench}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"results : {_rel(path)}")
    if chart:
        chart_or_skip([doc], os.path.splitext(path)[0])


def _rel(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results JSON written by micro/net/children.py")
    ap.add_argument(
        "-o",
        "--out",
        help="output path without extension (default: beside the first file, named after it)",
    )
    ap.add_argument(
        "--rows",
        help="comma-separated row names or patterns to draw (default: every row); a file with"
        " no matching row is drawn whole",
    )
    args = ap.parse_args(argv)
    docs = []
    for path in args.results:
        with open(path) as f:
            doc = json.load(f)
        if args.rows:
            patterns = [p.strip() for p in args.rows.split(",") if p.strip()]
            keep = {
                name: row
                for name, row in doc["rows"].items()
                if any(fnmatch.fnmatchcase(name, p) for p in patterns)
            }
            # A file none of whose rows match is drawn whole: `--rows` can pick the network
            # rows of a micro + net figure (make demo's) without naming every micro row.
            doc["rows"] = keep or doc["rows"]
        docs.append(doc)
    out = args.out or os.path.splitext(args.results[0])[0]
    return 0 if chart_or_skip(docs, out) else 1


if __name__ == "__main__":
    sys.exit(main())
