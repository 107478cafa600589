"""The learning curve as a PNG, for places that show no vega plots (GitHub, Studio's file view, a file browser).

`dvc plots show` draws the same rows with .dvc/plots/learning_curve.json; the names and colours here
match that template's, so the two pictures read alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bert2lr.files import atomic_path

# (field of metrics/learning_curve.json, legend name, colour), in legend order: the fields dvc.yaml plots.
SERIES = (
    ("student", "student, test sample", "#0072B2"),
    ("student_full", "student, whole test set", "#009E73"),
    ("agreement", "student agrees with teacher", "#CC79A7"),
    ("teacher", "teacher (BERT), test sample", "#D55E00"),
    ("baseline", "baseline (n-gram LR), test sample", "#666666"),
)
X_FIELD = "n_unlabeled"
X_LABEL = "unlabeled reviews the student learned from (log scale)"
Y_LABEL = "accuracy"
TITLE = "Learning curve: accuracy against unlabeled reviews"


def write_learning_curve_png(rows: Sequence[dict], path: Path | str) -> Path:
    """Draw the curve's rows (one per transfer-set size) as a PNG at `path`, written atomically."""
    if not rows or any(X_FIELD not in row for row in rows):
        raise ValueError(f"learning-curve rows must be non-empty and each hold {X_FIELD!r}")
    # matplotlib costs about a second to import: only the curve stage pays it, and only here.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, PercentFormatter

    rows = sorted(rows, key=lambda row: row[X_FIELD])
    sizes = [row[X_FIELD] for row in rows]
    fig = Figure(figsize=(9, 4.8), dpi=100)  # an explicit Figure: no pyplot state, the Agg canvas below
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for rank, (field, name, colour) in enumerate(SERIES):
        points = [(row[X_FIELD], row[field]) for row in rows if row.get(field) is not None]
        if points:
            xs, ys = zip(*points)
            # The first series on top: where the student meets its teacher, the student stays visible.
            ax.plot(xs, ys, marker="o", linewidth=2.2, markersize=5, color=colour, label=name,
                    zorder=3 + len(SERIES) - rank)
    ax.set_xscale("log")
    # Ticks at the sizes measured, written out in full, instead of the log scale's powers of ten.
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(sizes) > 1:
        ax.set_xlim(sizes[0] / 1.15, sizes[-1] * 1.15)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    ax.set_title(TITLE, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        # No "Software" entry: the file's bytes (and dvc.lock's hash) do not name matplotlib's version.
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return Path(path)
