"""Figures drawn from results tables alone (and the 2-D demo from its samples). Nothing here trains.

Every figure uses one style (`STYLE`, fixed colours per model variant and data source), stands alone (a
title in words, labelled axes, legends outside the plotted area, ticks at the values that exist, a footnote
for whatever qualifies it) and is written in each of the formats asked for (PNG by default; PDF and SVG are
vector output for papers).
"""

import math
import textwrap
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from pathlib import Path
from typing import Any

import matplotlib

from randsae.errors import BadInput

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from randsae.io import atomic_write  # noqa: E402
from randsae.scorer_kinds import COMPARED, SCORER_KINDS  # noqa: E402
from randsae.tables import CompareRow, CurveRow, RecoveryRow, SweepRow, judge_at_chance  # noqa: E402

FORMATS = ("png", "pdf", "svg")
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3, "savefig.dpi": 150,
         "savefig.bbox": "tight", "legend.frameon": False, "svg.fonttype": "none", "pdf.fonttype": 42}
# the same colour for a variant or data source in every figure
VARIANT_COLOURS = {"trained": "#1f77b4", "rerandomized": "#d62728", "rerandomized-no-embed": "#ff7f0e",
                   "step0": "#9467bd", "control": "#7f7f7f"}
DATA_COLOURS = {"sharkey": "#1f77b4", "glove": "#2ca02c", "gaussian": "#7f7f7f"}
DATA_NAMES = {"sharkey": "Sharkey toy data", "gaussian": "matched Gaussian control", "glove": "GloVe word vectors"}
TRANSFORM_NAMES = {"none": "raw inputs", "mlp": "inputs through a random MLP"}
EXTRA_COLOURS = plt.get_cmap("tab10").colors  # pyright: ignore[reportAttributeAccessIssue] (a ListedColormap)


def colour(name: str, palette: dict[str, str], others: list[str]) -> str:
    """The fixed colour of `name`, or one of tab10's for names the palette does not know (stable per run)."""
    if name in palette:
        return palette[name]
    if name not in others:
        others.append(name)
    return EXTRA_COLOURS[(others.index(name) + 3) % len(EXTRA_COLOURS)]


def data_name(data: str) -> str:
    return DATA_NAMES.get(data, data.replace("embeddings:", "token embeddings of "))


def parse_formats(text: str) -> list[str]:
    formats = [part.strip().lower() for part in text.split(",") if part.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if not formats or bad:
        raise BadInput(f"--format takes a comma list of {', '.join(FORMATS)}, not {text!r}.")
    return list(dict.fromkeys(formats))


def styled(draw: Callable) -> Callable:
    """Draw inside the project's style."""
    @wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):  # pyright: ignore[reportArgumentType] (its keys are rc names)
            return draw(*args, **kwargs)
    return wrapper


def _value(row, column: str) -> float | None:
    """A row's number in `column` (a typed table's row), None when it has none."""
    value = row.get(column)
    if value is None or value == "":
        return None
    return float(value)


def _save(fig, path: str | Path, formats: Sequence[str] = ("png",), notes: Sequence[str] = ()) -> Path:
    """Write `fig` as PATH.<format> for each format (atomically); `notes` go under it as footnotes.
    Returns the first file written."""
    path = Path(path)
    if notes:  # under everything already drawn (tick labels and axis labels reach below the axes)
        bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0 / fig.get_figheight()
        left = fig.get_tightbbox(fig.canvas.get_renderer()).x0 / fig.get_figwidth()
        width = max(60, round(fig.get_figwidth() * 17))  # characters of 7-point text across the figure
        text = "\n".join(textwrap.fill(note, width) for note in notes)
        fig.text(left, bottom - 0.01, text, fontsize=7, ha="left", va="top", color="#444444")
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        atomic_write(target, lambda p, f=fmt: fig.savefig(p, format=f))
        written.append(target)
    plt.close(fig)
    return written[0]


def legend_outside(ax, **kwargs) -> None:
    """The axes' legend to the right of it, where it covers no data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, **kwargs)


def mean_and_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    a = np.asarray(values, dtype=float)
    sem = a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else 0.0
    return float(a.mean()), float(sem)


def pareto_frontier(sparsity: Sequence[float], quality: Sequence[float],
                    lower_is_sparser: bool) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats on both sparsity and quality, ordered from sparsest."""
    s, q = np.asarray(sparsity, dtype=float), np.asarray(quality, dtype=float)
    order = np.lexsort((-q, s if lower_is_sparser else -s))
    s, q = s[order], q[order]
    keep = q > np.maximum.accumulate(np.concatenate([[-np.inf], q[:-1]]))
    return s[keep], q[keep]


def goldilocks_range(coefs: Sequence[float], values: Sequence[float] | np.ndarray,
                     threshold: float = 0.9) -> tuple[float, float] | None:
    """The coefficient range where `values` (MMCS at ascending `coefs`) stays ≥ `threshold`: the longest
    run of swept coefficients at or above it, widened to where the curve crosses the threshold,
    interpolated linearly in log coefficient. None when no coefficient reaches it."""
    c, v = np.log10(np.asarray(coefs, dtype=float)), np.asarray(values, dtype=float)
    above = v >= threshold
    if not above.any():
        return None
    runs, start = [], None
    for i, flag in enumerate([*above, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i - 1))
            start = None
    first, last = max(runs, key=lambda r: (r[1] - r[0], -r[0]))

    def crossing(inside: int, outside: int) -> float:
        t = (v[inside] - threshold) / (v[inside] - v[outside])
        return c[inside] + t * (c[outside] - c[inside])

    left = crossing(first, first - 1) if first > 0 else c[first]
    right = crossing(last, last + 1) if last < len(c) - 1 else c[last]
    return float(10**left), float(10**right)


def coefficient_ticks(ax, coefs: Sequence[float]) -> None:
    """Log x-axis with a tick at every swept coefficient (labelled, thinned to at most 11 labels)."""
    coefs = sorted(set(coefs))
    step = max(1, math.ceil(len(coefs) / 11))
    ax.xaxis.set_major_locator(FixedLocator(coefs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{c:.3g}" if i % step == 0 else "" for i, c in enumerate(coefs)], rotation=45,
                       ha="right")


@styled
def plot_mmcs(rows: Sequence[SweepRow], path: str | Path, goldilocks: float = 0.9,
              formats: Sequence[str] = ("png",)) -> Path | None:
    """MMCS against the L1 coefficient, a line per dictionary size (mean ± SEM over seeds), a panel per
    data set with ground truth. Each size's Goldilocks band — the coefficients where its MMCS stays ≥
    `goldilocks` — is shaded in its colour. Returns None when no row has an MMCS."""
    groups: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds = set()
    for row in rows:
        value = _value(row, "mmcs")
        if value is not None:
            groups[row.data, row.transform, row.latents][row.l1_coef].append(value)
            seeds.add(row.seed)
    if not groups:
        return None
    panels = sorted({key[:2] for key in groups})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4), squeeze=False)
    bands = []
    for ax, (data, transform) in zip(axes[0], panels, strict=True):
        sizes = sorted(k for k in groups if k[:2] == (data, transform))
        swept = sorted({c for k in sizes for c in groups[k]})
        for index, key in enumerate(sizes):
            coefs = sorted(groups[key])
            stats = [mean_and_sem(groups[key][c]) for c in coefs]
            means = np.array([m for m, _ in stats])
            line_colour = EXTRA_COLOURS[index % len(EXTRA_COLOURS)]
            ax.errorbar(coefs, means, yerr=[s for _, s in stats], marker="o", ms=3, capsize=2,
                        color=line_colour, label=f"{key[2]} latents")
            band = goldilocks_range(coefs, means, goldilocks)
            if band:
                ax.axvspan(*band, color=line_colour, alpha=0.15, lw=0,
                           label=f"{key[2]}: MMCS ≥ {goldilocks:g}, c ∈ [{band[0]:.3g}, {band[1]:.3g}]")
                bands.append(band)
        ax.axhline(goldilocks, color="#444444", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="L1 coefficient c (sparsity penalty)",
               ylabel="MMCS: mean max cosine similarity\nof true features to decoder directions", ylim=(0, 1.02),
               title=f"Feature recovery — {data_name(data)}, {TRANSFORM_NAMES.get(transform, transform)}")
        coefficient_ticks(ax, swept)
        legend_outside(ax)
    n = len(seeds)
    notes = ["Shaded: each dictionary size's Goldilocks band, the coefficients where its MMCS stays ≥ "
             f"{goldilocks:g} (interpolated between swept coefficients in log space)" +
             ("" if bands else f"; no size reaches {goldilocks:g} here"),
             "1 seed: no error bars." if n == 1 else f"Mean ± standard error over {n} seeds."]
    return _save(fig, path, formats, notes)


SPARSITY_AXES = {"l0": ("L0, active latents per sample\n(symlog: linear below 1, where collapsed SAEs sit; "
                        "log above)", True),
                 "hoyer": ("Hoyer sparseness (0 flat, 1 one active latent)", False)}


@styled
def plot_frontiers(rows: Sequence[SweepRow], path: str | Path, sparsity: str = "l0",
                   formats: Sequence[str] = ("png",)) -> Path | None:
    """Explained variance against sparsity: every SAE as a dot, each data source's Pareto frontier as a
    line, a panel per transform on shared axes. Returns None when the table is empty."""
    label, lower_is_sparser = SPARSITY_AXES[sparsity]
    points: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        s, ev = _value(row, sparsity), _value(row, "explained_variance")
        if s is not None and ev is not None and math.isfinite(s) and math.isfinite(ev):
            points[row.transform, row.data].append((s, ev))
    if not points:
        return None
    transforms = sorted({t for t, _ in points}, key=lambda t: (t != "none", t))
    fig, axes = plt.subplots(1, len(transforms), figsize=(5.2 * len(transforms) + 1.5, 4), squeeze=False,
                             sharex=True, sharey=True)
    others: list[str] = []
    collapsed = 0
    for ax, transform in zip(axes[0], transforms, strict=True):
        for (t, data), pts in sorted(points.items()):
            if t != transform:
                continue
            s, ev = np.array(pts).T
            collapsed += int((s < 1).sum()) if lower_is_sparser else 0
            c = colour(data, DATA_COLOURS, others)
            ax.scatter(s, ev, s=8, alpha=0.3, color=c)
            fs, fev = pareto_frontier(s, ev, lower_is_sparser)
            ax.plot(fs, fev, marker="o", ms=3, color=c, label=f"{data_name(data)} (frontier)")
        name = TRANSFORM_NAMES.get(transform, transform)
        ax.set(xlabel=label, ylim=(-0.05, 1.02), title=name[0].upper() + name[1:])
        if lower_is_sparser:
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(left=0)
            ax.axvline(1.0, color="#444444", lw=0.6, ls=":")
    axes[0, 0].set_ylabel("explained variance (validation split)")
    legend_outside(axes[0, -1])
    notes = ["Each dot is one SAE; lines are the Pareto frontiers (no other SAE of that data is both sparser "
             "and better)."]
    if lower_is_sparser and collapsed:
        notes.append(f"{collapsed} SAEs have L0 < 1 (mostly collapsed: most samples activate no latent); "
                     "left of the dotted line the axis is linear.")
    fig.suptitle("Reconstruction against sparsity, raw and after a random MLP", y=1.02)
    return _save(fig, path, formats, notes)


def plot_results(rows: Sequence[SweepRow], out: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Every figure a results table supports, written into `out` (diverged SAEs left out)."""
    out = Path(out)
    rows = [row for row in rows if not row.diverged]
    drawn = [plot_mmcs(rows, out / "mmcs.png", formats=formats),
             plot_frontiers(rows, out / "frontier_l0.png", "l0", formats=formats),
             plot_frontiers(rows, out / "frontier_hoyer.png", "hoyer", formats=formats)]
    return [p for p in drawn if p is not None]


@styled
def plot_lomax(inputs: np.ndarray, outputs: np.ndarray, path: str | Path,
               formats: Sequence[str] = ("png",)) -> Path:
    """Scatter plots of the 2-D demo before and after the random MLP (paper Fig. 3)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, points, title, name in ((axes[0], inputs, "Sparse features projected to 2-D", "x"),
                                    (axes[1], outputs, "The same points after a random MLP 2 → 8 → 2", "y")):
        points = np.asarray(points)
        limit = np.quantile(np.abs(points - np.median(points, axis=0)), 0.98) * 1.2
        limit = limit if limit > 0 else 1.0  # one point, or all at one place: a unit window around it
        centre = np.median(points, axis=0)
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4, color=DATA_COLOURS["sharkey"])
        ax.set(xlim=(centre[0] - limit, centre[0] + limit), ylim=(centre[1] - limit, centre[1] + limit),
               title=title, aspect="equal", xlabel=f"{name}₁ (first coordinate)",
               ylabel=f"{name}₂ (second coordinate)")
    notes = ["Each sample has one active feature (Lomax magnitude, random sign); axes cut at the 98th "
             "percentile of distance from the median."]
    return _save(fig, path, formats, notes)


SCORER_COLUMNS = {SCORER_KINDS[name].column: SCORER_KINDS[name] for name in COMPARED}
LM_METRICS = {"explained_variance": "explained variance", "cosine_sim": "cosine similarity",
              "l1": "L1 of latents", "dead_fraction": "dead fraction", "ce_loss_score": "CE loss score",
              "entropy_mean": "token entropy (nats)\nsampled latents",
              **{SCORER_KINDS[name].column: f"{SCORER_KINDS[name].label}\n(95% CI)" for name in COMPARED}}


@styled
def plot_lm_comparison(rows: Sequence[CompareRow], path: str | Path, notes: Sequence[str] = (),
                       formats: Sequence[str] = ("png",)) -> Path:
    """The paper's Figs. 1–2: a panel per metric, layer on x (ticks at the layers there are), a line per
    variant in its fixed colour. One model: the panels in a grid across the page's width (up to
    `GRID_COLUMNS` a row); several: a row per metric and a column per model. The explained-variance panels also
    show the PCA baseline of each variant (dashed); the CE panels a reference line at 1; the entropy panel
    (when rows carry it) mean ± standard deviation over the sampled latents. `notes` go under the figure."""
    models = sorted({r.model for r in rows})
    variants = sorted({r.variant for r in rows}, key=lambda v: (list(VARIANT_COLOURS) + [v]).index(v))
    metrics = {m: label for m, label in LM_METRICS.items() if any(_value(r, m) is not None for r in rows)}
    others: list[str] = []
    fig, panel = comparison_panels(len(metrics), len(models))
    for column, model in enumerate(models):
        layers_there = sorted({r.layer for r in rows if r.model == model})
        for row_index, (metric, label) in enumerate(metrics.items()):
            ax = panel(row_index, column)
            for variant in variants:
                points = sorted(((r.layer, r) for r in rows if r.model == model
                                 and r.variant == variant and _value(r, metric) is not None),
                                key=lambda p: p[0])
                if not points:
                    continue
                c = colour(variant, VARIANT_COLOURS, others)
                layers = [layer for layer, _ in points]
                values = [float(_value(r, metric) or 0.0) for _, r in points]  # the points hold a value
                if metric == "entropy_mean":
                    spread = [_value(r, "entropy_std") or 0.0 for _, r in points]
                    ax.errorbar(layers, values, yerr=spread, fmt="o-", ms=3, capsize=2, color=c, label=variant)
                elif metric in SCORER_COLUMNS:
                    kind = SCORER_COLUMNS[metric]
                    low = [v - (_value(r, kind.bound("low")) or v) for v, (_, r)
                           in zip(values, points, strict=True)]
                    high = [(_value(r, kind.bound("high")) or v) - v for v, (_, r)
                            in zip(values, points, strict=True)]
                    ax.errorbar(layers, values, yerr=[low, high], fmt="o-", ms=3, capsize=2, color=c,
                                label=variant)
                else:
                    ax.plot(layers, values, "o-", ms=3, color=c, label=variant)
                flag = {"explained_variance": "EV<PCA", "ce_loss_score": "CE<0"}.get(metric)
                bad = [(layer, v) for layer, v, (_, r) in zip(layers, values, points, strict=True)
                       if flag and flag in (r.below_baseline or "")]
                if bad:  # below the simplest baseline: a red cross over the point (the note names them)
                    ax.plot(*zip(*bad, strict=True), "x", ms=9, mew=2, color="#b00020", zorder=5)
                if metric == "explained_variance":
                    ax.plot(layers, [_value(r, "pca_explained_variance") or np.nan for _, r in points], "--",
                            color=c, alpha=0.6, label=f"{variant}: PCA, k components")
            if metric == "ce_loss_score":
                ax.axhline(1.0, color="#444444", lw=0.8, ls=":")
            if metric in SCORER_COLUMNS:  # chance: 0.5 for an AUROC, 1/windows for the intruder's accuracy
                chances = (_value(r, f"chance_{metric.split('_', 1)[1]}") for r in rows)
                chance = next((c for c in chances if c is not None), 0.5)
                ax.axhline(chance, color="#444444", lw=0.8, ls=":")
                if any(judge_at_chance(r, metric) for r in rows if r.model == model):
                    ax.text(0.5, 0.5, "judge at chance", transform=ax.transAxes, ha="center", va="center",
                            color="#b00020", alpha=0.6, fontsize=11, fontweight="bold")
            ax.set_ylabel(label if len(models) > 1 else label.replace("\n", " "))
            ax.set_xlabel("layer (block output)")
            ax.xaxis.set_major_locator(FixedLocator(layers_there))
            if row_index == 0 or len(models) == 1:
                pca = " (dashed: PCA, k components)" if metric == "explained_variance" else ""
                ax.set_title(model if len(models) > 1 else label.split("\n")[0] + pca, fontsize=10)
    # the legend right of the top-right panel: the last model's first, or the end of one model's first row
    legend_outside(panel(0, len(models) - 1) if len(models) > 1 else panel(min(GRID_COLUMNS, len(metrics)) - 1, 0))
    if len(models) == 1:
        fig.suptitle(models[0])
    return _save(fig, path, formats, notes)


GRID_COLUMNS = 4  # panels a row when one model fills the page


def comparison_panels(metrics: int, models: int) -> tuple[Any, Callable[[int, int], Axes]]:
    """The figure and `panel(metric, model) -> axes`: one model's metrics in a grid across the width, several
    models' in a column each."""
    if models > 1:
        fig, axes = plt.subplots(metrics, models, figsize=(4.2 * models + 1.8, 2.2 * metrics), squeeze=False)
        return fig, lambda m, c: axes[m, c]
    columns = min(GRID_COLUMNS, metrics)
    rows = math.ceil(metrics / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.0 * columns + 1.8, 3.2 * rows), squeeze=False,
                             gridspec_kw={"wspace": 0.55, "hspace": 0.65})
    for extra in axes.flat[metrics:]:
        fig.delaxes(extra)
    return fig, lambda m, c: axes.flat[m]


@styled
def plot_entropy_histograms(summaries: Sequence, path: str | Path, formats: Sequence[str] = ("png",)) -> Path:
    """Per (model, variant): histograms of the sampled latents' explainer-set entropy, one per layer, on
    shared axes (the paper's Fig. 20 x-axis)."""
    groups: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in summaries:
        if s.sampled and math.isfinite(s.entropy_explainer):
            groups[s.model, s.variant][s.layer].append(s.entropy_explainer)
    keys = sorted(groups, key=lambda k: (k[0], (list(VARIANT_COLOURS) + [k[1]]).index(k[1])))
    if not keys:
        raise BadInput("no sampled latents to draw an entropy histogram of.")
    top = max(max(v) for g in groups.values() for v in g.values())
    bins = np.linspace(0, max(top, 1e-3) * 1.05, 25)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 1.5, 3.2), squeeze=False, sharex=True,
                             sharey=True)
    layers_all = sorted({layer for g in groups.values() for layer in g})
    shades = dict(zip(layers_all, plt.cm.viridis(np.linspace(0, 0.9, len(layers_all))), strict=True))
    for ax, key in zip(axes[0], keys, strict=True):
        for layer in sorted(groups[key]):
            ax.hist(groups[key][layer], bins=bins, histtype="step", color=shades[layer], label=f"layer {layer}")
        ax.set(title=f"{key[0]}: {key[1]}", xlabel="token entropy (nats), explainer set")
    axes[0, 0].set_ylabel("sampled latents")
    legend_outside(axes[0, -1])
    notes = ["Token-distribution entropy H = −Σ p_t ln p_t of each sampled latent's activation mass per token id "
             "over its explainer set (docs/paper.md §2.4): 0 for one token, ln n for n tokens evenly."]
    return _save(fig, path, formats, notes)


@styled
def plot_entropy_auroc(results: Sequence, path: str | Path, scorer: str = "fuzzing", notes: Sequence[str] = (),
                       at_chance: bool = False, formats: Sequence[str] = ("png",)) -> Path:
    """The paper's Fig. 20: per scored latent, its token-distribution entropy (x) against its `scorer` AUROC
    (y); a row per (model, variant), a column per layer, Spearman ρ on each panel. With `at_chance` the judge
    could not be told from chance on the known-answer set, and the figure says so across its top."""
    from randsae.metrics import spearman

    points: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        for s in r.results:
            if s.scorer == scorer and math.isfinite(s.auroc) and math.isfinite(r.entropy):
                points[r.model, r.variant][r.layer].append((r.entropy, s.auroc))
    keys = sorted(points, key=lambda k: (k[0], (list(VARIANT_COLOURS) + [k[1]]).index(k[1])))
    if not keys:
        raise BadInput(f"no latent has both an entropy and a {scorer} AUROC to draw.")
    layers = sorted({layer for g in points.values() for layer in g})
    fig, axes = plt.subplots(len(keys), len(layers), figsize=(2.9 * len(layers) + 1.0, 2.6 * len(keys) + 0.6),
                             squeeze=False, sharex=True, sharey=True)
    others: list[str] = []
    for row, key in enumerate(keys):
        c = colour(key[1], VARIANT_COLOURS, others)
        for column, layer in enumerate(layers):
            ax = axes[row, column]
            pairs = points[key].get(layer, [])
            ax.axhline(0.5, color="#888888", lw=0.8, ls=":")
            if pairs:
                x, y = zip(*pairs, strict=True)
                ax.scatter(x, y, s=12, color=c, alpha=0.8)
                rho = spearman(np.array(x), np.array(y))
                spearman_text = f"ρ = {rho:.2f}" if np.isfinite(rho) else "ρ: too few latents"
                ax.set_title(f"{key[1]}, layer {layer}\n{spearman_text}  (n = {len(pairs)})", fontsize=8)
            else:
                ax.set_title(f"{key[1]}, layer {layer}\n(no latents)", fontsize=8)
            ax.set_ylim(-0.03, 1.03)
            if row == len(keys) - 1:
                ax.set_xlabel("token entropy (nats)")
            if column == 0:
                ax.set_ylabel(f"{scorer} AUROC")
    if at_chance:  # above everything drawn (the panel titles reach above the axes)
        box = fig.get_tightbbox(fig.canvas.get_renderer())  # pyright: ignore[reportAttributeAccessIssue] (Agg)
        fig.text(box.x0 / fig.get_figwidth(), box.y1 / fig.get_figheight() + 0.02,
                 "JUDGE AT CHANCE on the known-answer set: these AUROCs do not measure the latents",
                 color="#b00020", fontsize=10, fontweight="bold", ha="left", va="bottom")
    return _save(fig, path, formats, notes)


# the verdict's outcomes, coloured alike in the report's matrices and in this figure
OUTCOME_COLOURS = {"differs": "#c8e6c9", "same": "#bbdefb", "cannot tell": "#eeeeee", "not comparable": "#ffcdd2"}


def _wrapped(text: str, width: int = 34) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


OUTCOME_MEANINGS = {"differs": "differs: a random twin gives another result",
                    "same": "the same within ±δ: a random twin gives this result too",
                    "cannot tell": "cannot tell: the interval is too wide",
                    "not comparable": "not comparable: the comparison does not count (why: in the cell)"}


@styled
def plot_verdict_matrix(matrices: Sequence[tuple[int, Sequence[str], Sequence[str], Sequence[Sequence[Any]]]],
                        path: str | Path, notes: Sequence[str] = (),
                        marks: Mapping[str, str] | None = None, title: str = "") -> Path:
    """The verdict at a glance: per layer a grid, metrics as rows and random twins as columns, each cell its
    outcome and the difference trained − twin with its 95% interval (or why it is not comparable), coloured by
    outcome, with a legend of the colours and the sign convention under `title`. `matrices`: (layer, metric
    labels, twins, cells[metric][twin]), each cell with `.outcome`, `.text`; `marks`: {reason: mark} of reasons
    said once in `notes`, the mark alone in their cells."""
    if not matrices:
        raise BadInput("the verdict has no row to draw.")
    # one layer under another, so the figure stays as wide as one layer's twins (readable at 800 px)
    heights = [len(m[1]) for m in matrices]
    height = sum(0.55 * h + 0.75 for h in heights) + 1.6
    fig, axes = plt.subplots(len(matrices), 1, figsize=(2.6 + 2.2 * max(len(m[2]) for m in matrices), height),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    fig.subplots_adjust(top=1 - 1.75 / height, bottom=0.2 / height, left=0.26, right=0.98, hspace=0.75 / 0.55 /
                        (sum(heights) / len(heights)))
    marks = marks or {}
    fig.suptitle(title or "the verdict: trained − twin", fontsize=10, weight="bold", y=1 - 0.08 / height)
    fig.text(0.5, 1 - 0.5 / height, "each cell: the trained model's SAE minus the random twin's (positive: the "
             "trained model's is higher), its 95% interval", ha="center", fontsize=7.5, color="#333")
    fig.legend(handles=[Rectangle((0, 0), 1, 1, facecolor=OUTCOME_COLOURS[o], edgecolor="#999") for o in
                        OUTCOME_MEANINGS], labels=list(OUTCOME_MEANINGS.values()), loc="upper center",
               bbox_to_anchor=(0.5, 1 - 0.62 / height), ncol=1, fontsize=7.5, frameon=False)
    for ax, (layer, metrics, twins, cells) in zip(axes[:, 0], matrices, strict=True):
        ax.set_xlim(0, len(twins))
        ax.set_ylim(len(metrics), 0)
        ax.grid(False)
        for i, row in enumerate(cells):
            for j, cell in enumerate(row):
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor=OUTCOME_COLOURS[cell.outcome],
                                           edgecolor="white", linewidth=2))
                ax.text(j + 0.5, i + 0.32, cell.outcome, ha="center", va="center", fontsize=8, weight="bold")
                shown, size = (marks[cell.text], 8) if cell.text in marks else (_wrapped(cell.text), 6)
                ax.text(j + 0.5, i + 0.68, shown, ha="center", va="center", fontsize=size, color="#333")
        ax.set_xticks([j + 0.5 for j in range(len(twins))], list(twins))
        ax.xaxis.tick_top()
        ax.set_yticks([i + 0.5 for i in range(len(metrics))], list(metrics))
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(f"block {layer}: trained − twin [95% interval]", fontsize=9, pad=18)
    return _save(fig, path, notes=notes)


DICTIONARY_STYLES = {"trained": ("#1f4e79", "-"), "frozen-decoder": ("#c0392b", "--"),
                     "frozen-decoder-cov": ("#e67e22", "--"), "soft-frozen-decoder": ("#8e44ad", "-."),
                     "frozen-encoder": ("#27ae60", ":")}


@styled
def plot_recovery(rows: Sequence[RecoveryRow], num_features: int, path: str | Path,
                  formats: Sequence[str] = ("png",), notes: Sequence[str] = ()) -> Path | None:
    """`randsae recovery`'s curve: recovered features (of `num_features`) and explained variance against the
    training samples seen, a column per architecture, two rows per probability setting, a line per dictionary.
    Returns None when the table is empty."""
    if not rows:
        return None
    settings = list(dict.fromkeys(r.probabilities for r in rows))
    architectures = list(dict.fromkeys(r.architecture for r in rows))
    fig, axes = plt.subplots(2 * len(settings), len(architectures), figsize=(3.4 * len(architectures) + 1.8,
                             2.6 * 2 * len(settings)), squeeze=False, sharex=True)
    for i, probabilities in enumerate(settings):
        for j, architecture in enumerate(architectures):
            recovered, variance = axes[2 * i, j], axes[2 * i + 1, j]
            for dictionary, (line_colour, style) in DICTIONARY_STYLES.items():
                line = sorted((r.samples, r.recovered / num_features, r.explained_variance) for r in rows
                              if (r.probabilities, r.architecture, r.dictionary) == (probabilities, architecture,
                                                                                     dictionary))
                if line:
                    x = [point[0] for point in line]
                    recovered.plot(x, [point[1] for point in line], style, color=line_colour, marker="o", ms=2.5,
                                   label=dictionary)
                    variance.plot(x, [point[2] for point in line], style, color=line_colour, marker="o", ms=2.5)
            trained = [r for r in rows if (r.probabilities, r.architecture, r.dictionary) ==
                       (probabilities, architecture, "trained")]
            if trained:  # what a low count comes with: latents that never fire
                last = max(trained, key=lambda r: r.samples)
                recovered.text(0.03, 0.93, f"trained: {last.dead_fraction:.0%} of latents dead", fontsize=7.5,
                               transform=recovered.transAxes, va="top", color="#1f4e79")
            recovered.set(xscale="log", ylim=(-0.02, 1.02), title=f"{architecture} · {probabilities} p")
            variance.set(xscale="log", ylim=(0, 1.02))
            if i == len(settings) - 1:
                variance.set_xlabel("training samples seen (each fresh)")
            if j == 0:
                recovered.set_ylabel(f"recovered features\n(share of {num_features:,})")
                variance.set_ylabel("explained variance\n(held-out)")
    legend_outside(axes[0, -1])
    return _save(fig, path, formats, notes)


@styled
def plot_curves(curves: Mapping[str, Sequence[CurveRow]], path: str | Path, formats: Sequence[str] = ("png",),
                notes: Sequence[str] = ()) -> Path | None:
    """Learning curves (`lm train`'s curve.csv): held-out explained variance against training tokens, a column
    per layer, a line per arm (dashed: the same SAE on a sample of its training tokens); under it, the latents
    dead on the held-out sample. Returns None when no arm has a curve."""
    layers = sorted({r.layer for rows in curves.values() for r in rows})
    if not layers:
        return None
    fig, axes = plt.subplots(2, len(layers), figsize=(3.6 * len(layers) + 1.8, 5.2), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 1.3]})
    others: list[str] = []
    for j, layer in enumerate(layers):
        variance, dead = axes[0, j], axes[1, j]
        for arm, rows in curves.items():
            line = sorted((r.tokens, r.held_out_explained_variance, r.train_explained_variance, r.dead_fraction)
                          for r in rows if r.layer == layer)
            if not line:
                continue
            x, shade = [p[0] for p in line], colour(arm.split("+")[0], VARIANT_COLOURS, others)
            variance.plot(x, [p[1] for p in line], "-o", ms=3, color=shade, label=arm)
            variance.plot(x, [p[2] for p in line], "--", lw=1, color=shade)
            dead.plot(x, [p[3] for p in line], "-o", ms=3, color=shade)
        variance.set(xscale="log", title=f"layer {layer}")
        dead.set(xscale="log", ylim=(-0.02, 1.02), xlabel="training tokens")
        if j == 0:
            variance.set_ylabel("explained variance\n(solid: held-out; dashed: training)")
            dead.set_ylabel("dead latents\n(held-out)")
    legend_outside(axes[0, -1])
    return _save(fig, path, formats, notes)
