"""Figures drawn from results tables alone (and the 2-D demo from its samples). Nothing here trains."""

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from randsae.io import atomic_write  # noqa: E402

Row = dict[str, str | float | int | None]


def _value(row: Row, column: str) -> float | None:
    value = row.get(column)
    if value is None or value == "":
        return None
    return float(value)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=130, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


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


def plot_mmcs(rows: Sequence[Row], path: str | Path, goldilocks: float = 0.9) -> Path | None:
    """MMCS against the L1 coefficient, a line per dictionary size (mean ± SEM over seeds).

    The shaded band marks the coefficients where some dictionary size's mean MMCS reaches `goldilocks`.
    Returns None when no row has an MMCS.
    """
    groups: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = _value(row, "mmcs")
        if value is not None:
            key = (row["data"], row["transform"], int(row["latents"]))
            groups[key][float(row["l1_coef"])].append(value)
    if not groups:
        return None
    variants = sorted({key[:2] for key in groups})
    fig, axes = plt.subplots(1, len(variants), figsize=(6 * len(variants), 4.2), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        band = []
        for key in sorted(k for k in groups if k[:2] == variant):
            coefs = sorted(groups[key])
            stats = [mean_and_sem(groups[key][c]) for c in coefs]
            means = np.array([m for m, _ in stats])
            sems = np.array([s for _, s in stats])
            ax.errorbar(coefs, means, yerr=sems, marker="o", ms=3, capsize=2, label=f"{key[2]} latents")
            band += [c for c, m in zip(coefs, means, strict=True) if m >= goldilocks]
        if band:
            ax.axvspan(min(band), max(band), color="gold", alpha=0.25,
                       label=f"Goldilocks (MMCS ≥ {goldilocks:g})")
        ax.set(xscale="log", xlabel="L1 coefficient", ylabel="MMCS", ylim=(0, 1.02),
               title=f"Feature recovery: {variant[0]} / {variant[1]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


SPARSITY_AXES = {"l0": ("L0 (active latents per sample)", True),
                 "hoyer": ("Hoyer sparseness", False)}


def plot_frontiers(rows: Sequence[Row], path: str | Path, sparsity: str = "l0") -> Path | None:
    """Explained variance against sparsity: every SAE as a dot, each data source's Pareto frontier as a
    line, one panel per transform. Returns None when the table is empty."""
    label, lower_is_sparser = SPARSITY_AXES[sparsity]
    points: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        s, ev = _value(row, sparsity), _value(row, "explained_variance")
        if s is not None and ev is not None and math.isfinite(s) and math.isfinite(ev):
            points[str(row["transform"]), str(row["data"])].append((s, ev))
    if not points:
        return None
    transforms = sorted({t for t, _ in points}, key=lambda t: (t != "none", t))
    fig, axes = plt.subplots(1, len(transforms), figsize=(5.5 * len(transforms), 4.2), squeeze=False)
    for ax, transform in zip(axes[0], transforms, strict=True):
        for (t, data), pts in sorted(points.items()):
            if t != transform:
                continue
            s, ev = np.array(pts).T
            dots = ax.scatter(s, ev, s=8, alpha=0.3)
            fs, fev = pareto_frontier(s, ev, lower_is_sparser)
            ax.plot(fs, fev, marker="o", ms=3, color=dots.get_facecolor()[0][:3], label=data)
        ax.set(xlabel=label, ylabel="explained variance", ylim=(-0.05, 1.02),
               title=f"inputs: {'raw' if transform == 'none' else transform}")
        if lower_is_sparser:
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_results(rows: Sequence[Row], out: str | Path) -> list[Path]:
    """Every figure a results table supports, written into `out` (diverged SAEs left out)."""
    out = Path(out)
    rows = [row for row in rows if row.get("status") != "diverged"]
    drawn = [plot_mmcs(rows, out / "mmcs.png"),
             plot_frontiers(rows, out / "frontier_l0.png", "l0"),
             plot_frontiers(rows, out / "frontier_hoyer.png", "hoyer")]
    return [p for p in drawn if p is not None]


def plot_lomax(inputs: np.ndarray, outputs: np.ndarray, path: str | Path) -> Path:
    """Scatter plots of the 2-D demo before and after the random MLP (paper Fig. 3)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, points, title in ((axes[0], inputs, "sparse features projected to 2-D"),
                              (axes[1], outputs, "after a random MLP 2 → 8 → 2")):
        points = np.asarray(points)
        limit = np.quantile(np.abs(points - np.median(points, axis=0)), 0.98) * 1.2
        centre = np.median(points, axis=0)
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4)
        ax.set(xlim=(centre[0] - limit, centre[0] + limit), ylim=(centre[1] - limit, centre[1] + limit),
               title=title, aspect="equal")
        ax.grid(alpha=0.3)
    return _save(fig, path)


LM_METRICS = {"explained_variance": "explained variance", "cosine_sim": "cosine similarity",
              "l1": "L1 of latents", "dead_fraction": "dead fraction", "ce_loss_score": "CE loss score",
              "entropy_mean": "token entropy (nats)\nsampled latents"}


def plot_lm_comparison(rows: Sequence[Row], path: str | Path, notes: Sequence[str] = ()) -> Path:
    """The paper's Fig. 2: a row per metric, a column per model, layer on x, a line per variant. The
    explained-variance panels also show the PCA baseline of each variant (dashed, same colour); the entropy
    row (when rows carry it) shows mean ± standard deviation over the sampled latents. `notes` are printed
    under the figure."""
    models = sorted({str(r["model"]) for r in rows})
    variants = sorted({str(r["variant"]) for r in rows})
    metrics = {m: label for m, label in LM_METRICS.items() if any(_value(r, m) is not None for r in rows)}
    colours = {v: plt.cm.tab10(i % 10) for i, v in enumerate(variants)}
    fig, axes = plt.subplots(len(metrics), len(models), figsize=(4.2 * len(models), 2.3 * len(metrics)),
                             squeeze=False, sharex="col")
    for column, model in enumerate(models):
        for row_index, (metric, label) in enumerate(metrics.items()):
            ax = axes[row_index, column]
            for variant in variants:
                points = sorted(((int(r["layer"]), r) for r in rows if r["model"] == model
                                 and r["variant"] == variant and _value(r, metric) is not None),
                                key=lambda p: p[0])
                if not points:
                    continue
                layers = [layer for layer, _ in points]
                values = [_value(r, metric) for _, r in points]
                if metric == "entropy_mean":
                    spread = [_value(r, "entropy_std") or 0.0 for _, r in points]
                    ax.errorbar(layers, values, yerr=spread, fmt="o-", ms=3, capsize=2, color=colours[variant],
                                label=variant)
                else:
                    ax.plot(layers, values, "o-", ms=3, color=colours[variant], label=variant)
                if metric == "explained_variance":
                    ax.plot(layers, [_value(r, "pca_explained_variance") for _, r in points], "--",
                            color=colours[variant], alpha=0.6, label=f"{variant}, PCA (k components)")
            if metric == "ce_loss_score":
                ax.axhline(1.0, color="grey", lw=0.8, ls=":")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row_index == 0:
                ax.set_title(model)
                ax.legend(fontsize=7)
        axes[-1, column].set_xlabel("layer")
    fig.tight_layout()
    if notes:
        fig.text(0.01, 0, "\n".join(notes), fontsize=7, ha="left", va="top", wrap=True)
    return _save(fig, path)


def plot_entropy_histograms(summaries: Sequence, path: str | Path) -> Path:
    """Per (model, variant): histograms of the sampled latents' explainer-set entropy, one per layer, on
    shared axes (the paper's Fig. 20 x-axis)."""
    groups: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in summaries:
        if s.sampled and math.isfinite(s.entropy_explainer):
            groups[s.model, s.variant][s.layer].append(s.entropy_explainer)
    keys = sorted(groups)
    if not keys:
        raise ValueError("no sampled latents to draw an entropy histogram of.")
    top = max(max(v) for g in groups.values() for v in g.values())
    bins = np.linspace(0, max(top, 1e-3) * 1.05, 25)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3), squeeze=False, sharex=True, sharey=True)
    for ax, key in zip(axes[0], keys, strict=True):
        layers = sorted(groups[key])
        colours = plt.cm.viridis(np.linspace(0, 0.9, len(layers)))
        for colour, layer in zip(colours, layers, strict=True):
            ax.hist(groups[key][layer], bins=bins, histtype="step", color=colour, label=f"layer {layer}")
        ax.set(title=f"{key[0]} — {key[1]}", xlabel="token entropy (nats), explainer set")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("sampled latents")
    fig.tight_layout()
    return _save(fig, path)
