"""PNG plots of the report (matplotlib, Agg backend, imported lazily so the package stays light).

- bon_curves.png: exact Best-of-N per method (solid), the paper law (dashed, same colour), the per-query law
  (dotted), oracle and random; x axis log2 N.
- rho_u_hist.png: ρ_u histogram per reward model with the collapse threshold.
- rho_q_scatter.png: per-query ρ_q of two methods (user-det vs user-prob by default) with the diagonal.
- collapsed_user.png: one collapsed user's golden vs predicted scores, the two methods side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ORACLE_COLOR = "#d62728"
RANDOM_COLOR = "#7f7f7f"
RM_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def method_colors(methods: list[str]) -> dict[str, str]:
    """Stable colours: oracle red, random grey, reward models from a palette without red/grey."""
    out = {"oracle": ORACLE_COLOR, "random": RANDOM_COLOR}
    rms = [m for m in methods if m not in out]
    out.update({m: RM_COLORS[i % len(RM_COLORS)] for i, m in enumerate(rms)})
    return out


def plot_bon_curves(report: dict, plot_data: dict | None, path: Path) -> Path:
    """Best-of-N curves on a log2 N axis; law predictions in the RM's colour (dashed: paper, dotted: per-query)."""
    plt = _plt()
    g0 = report["golden"]
    ns = np.asarray(report["ns"])
    colors = method_colors(list(report["methods"]))
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for m, e in report["methods"].items():
        if plot_data is not None and m in plot_data["curves"]:  # smooth exact curves on every N
            c = plot_data["curves"][m]
            x = plot_data["grid"][: int(ns[-1])]
            obs = c["observed"][: x.size]
        else:
            x, obs = ns, np.asarray(e["bon"][g0])
        lw = 2.4 if m == "oracle" else 1.8
        ax.plot(x, obs, color=colors[m], lw=lw, label=m)
        ax.plot(ns, e["bon"][g0], "o", color=colors[m], ms=4)
        if e["kind"] == "rm":
            ax.plot(ns, e["law"]["paper"]["curve"], "--", color=colors[m], lw=1.3, alpha=0.9)
            ax.plot(ns, e["law"]["per_query"]["curve"], ":", color=colors[m], lw=1.3, alpha=0.9)
    th = report["theory"]["c_n_finite_pool"]["curve"]
    ax.plot(ns, th, linestyle=(0, (1, 3)), marker="x", color=ORACLE_COLOR, lw=1.0, ms=5, alpha=0.7)
    # legend entries for the line styles
    ax.plot([], [], "--", color="black", lw=1.3, label="paper law (dashed)")
    ax.plot([], [], ":", color="black", lw=1.3, label="per-query law (dotted)")
    ax.plot([], [], linestyle=(0, (1, 3)), marker="x", color=ORACLE_COLOR, label="oracle theory μ+σ·c_N")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel("N (candidates sampled per query, log2 scale)")
    ax.set_ylabel(f"expected {g0} of the selected candidate")
    ax.set_title(f"Best-of-N scaling: {report['dataset']} (exact over N-subsets; Monte Carlo: MBR, pool-aware RMs)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rho_hist(report: dict, plot_data: dict, path: Path) -> Path:
    """One panel per reward model: histogram of ρ_u with the collapse threshold and α."""
    plt = _plt()
    rho_u = plot_data["rho_u"]
    methods = list(rho_u)
    colors = method_colors(list(report["methods"]))
    cols = min(len(methods), 3)
    rows = int(np.ceil(len(methods) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False, sharex=True)
    bins = np.linspace(-1, 1, 41)
    for ax, m in zip(axes.ravel(), methods, strict=False):
        ax.hist(rho_u[m], bins=bins, color=colors[m], alpha=0.8, edgecolor="white")
        ax.axvline(plot_data["threshold"], color="black", ls="--", lw=1.2,
                   label=f"collapse threshold {plot_data['threshold']:g}")
        alpha = plot_data["alpha"].get(m)
        ax.set_title(f"{m}  (α = {alpha:.2f})" if alpha is not None and np.isfinite(alpha) else m)
        ax.set_xlabel(f"per-user correlation ρ_u ({report['user_rho']} {report['correlation']})")
        ax.set_ylabel("users")
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes.ravel()[len(methods):]:
        ax.axis("off")
    fig.suptitle(f"Per-user RM correlation with {report['golden']}: {report['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rho_q_scatter(report: dict, plot_data: dict, path: Path) -> Path:
    """Per-query ρ_q of method x vs method y; queries of users collapsed under x are marked."""
    plt = _plt()
    sc = plot_data["scatter"]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    col = np.asarray(sc["collapsed"], dtype=bool)
    ax.scatter(sc["x"][~col], sc["y"][~col], s=10, alpha=0.5, color="#1f77b4", label="queries")
    if col.any():
        ax.scatter(sc["x"][col], sc["y"][col], s=14, alpha=0.7, color=ORACLE_COLOR,
                   label=f"queries of users collapsed under {sc['x_method']}")
    ax.plot([-1, 1], [-1, 1], color="black", lw=1, ls="--", label="y = x")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    above = float((sc["y"] > sc["x"]).mean()) if sc["x"].size else float("nan")
    ax.set_xlim(-1.02, 1.02)
    ax.set_ylim(-1.02, 1.02)
    ax.set_xlabel(f"ρ_q under {sc['x_method']}")
    ax.set_ylabel(f"ρ_q under {sc['y_method']}")
    ax.set_title(f"Per-query correlation with the golden score\n{sc['y_method']} > {sc['x_method']} on "
                 f"{above:.0%} of {sc['x'].size} queries", fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_collapsed_user(report: dict, plot_data: dict, path: Path) -> Path:
    """Golden vs predicted scores of one collapsed user, one panel per method."""
    plt = _plt()
    cu = plot_data["collapsed_user"]
    methods = list(cu["methods"])
    colors = method_colors(list(report["methods"]))
    fig, axes = plt.subplots(1, len(methods), figsize=(5.0 * len(methods), 4.2), squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        ax.scatter(cu["golden"], cu["methods"][m], s=16, alpha=0.7, color=colors.get(m, "#1f77b4"))
        ax.set_title(f"{m}: ρ_u = {cu['rho'][m]:+.2f}")
        ax.set_xlabel(f"golden {cu['golden_name']}")
        ax.set_ylabel("predicted score μ")
        ax.grid(True, alpha=0.3)
    state = "collapsed" if cu["collapsed"] else "least healthy (no user collapsed)"
    fig.suptitle(f"User {cu['user_id']} ({state} under {methods[0]})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(report: dict, plot_data: dict[str, Any] | None, out_dir: Path) -> dict[str, Path]:
    """Write every plot the data allows; returns name -> path."""
    out: dict[str, Path] = {"bon_curves": plot_bon_curves(report, plot_data, out_dir / "bon_curves.png")}
    if plot_data is None:
        return out
    if plot_data["rho_u"]:
        out["rho_u_hist"] = plot_rho_hist(report, plot_data, out_dir / "rho_u_hist.png")
    if "scatter" in plot_data and plot_data["scatter"]["x"].size:
        out["rho_q_scatter"] = plot_rho_q_scatter(report, plot_data, out_dir / "rho_q_scatter.png")
    if "collapsed_user" in plot_data:
        out["collapsed_user"] = plot_collapsed_user(report, plot_data, out_dir / "collapsed_user.png")
    return out
