"""Figures: one per run (logged to its MLflow run) and the benchmark summary, in the spirit of
the original's panels: accuracy curves, sparsity, per-class E and C, FLOPs, time."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

LABELS = {"baseline": "Baseline", "lottery": "Lottery Ticket", "sel95": "SEL-95", "warmup_sel": "Warmup+SEL"}


def _class_curves(ax, history: pd.DataFrame, prefix: str, title: str) -> None:
    for col in [c for c in history.columns if c.startswith(prefix)]:
        ax.plot(history["epoch"], history[col], label=col[len(prefix):], lw=1)
    ax.set_title(title)
    ax.set_xlabel("epoch")


def run_figure(history: pd.DataFrame, title: str, path: Path) -> None:
    """Accuracy, sparsity, E and C per class of one run."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0, 0]
    for col in ("train_acc", "test_full", "test_100"):
        ax.plot(history["epoch"], history[col], label=col)
    ax.set_title("accuracy")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(history["epoch"], history["sparsity"])
    ax.set_title("gradient sparsity (zeroed fraction)")
    _class_curves(axes[1, 0], history, "E_", "embarrassment E per class")
    _class_curves(axes[1, 1], history, "C_", "confidence C per class")
    axes[1, 1].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def summary_figure(histories: dict[str, pd.DataFrame], summary: pd.DataFrame, path: Path) -> None:
    """The four experiments side by side: curves, FLOPs, time, per-class accuracy, E and C."""
    fig, axes = plt.subplots(3, 3, figsize=(16, 12))
    panels = [("test_full", "test accuracy (full test set)"), ("test_100", "held-out accuracy"),
              ("train_acc", "train accuracy"), ("sparsity", "gradient sparsity"),
              ("flops_proxy_T", "cumulative FLOPs, original's proxy (T)"),
              ("flops_executed_T", "cumulative FLOPs, executed (T)"), ("time_s", "wall time (s)")]
    for ax, (col, title) in zip(axes.flat, panels):
        for name, h in histories.items():
            ax.plot(h["epoch"], h[col], label=LABELS.get(name, name))
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0, 0].legend()
    ax = axes[2, 1]
    for name, h in histories.items():
        cols = [c for c in h.columns if c.startswith("acc_")]
        ax.plot([c[4:] for c in cols], h[cols].iloc[-1].to_numpy(), marker="o", label=LABELS.get(name, name))
    ax.set_title("final held-out accuracy per class")
    ax.tick_params(axis="x", rotation=60)
    ax = axes[2, 2]
    ax.scatter(summary["saved_proxy_pct"], summary["test_100"])
    for _, r in summary.iterrows():
        ax.annotate(LABELS.get(r["experiment"], r["experiment"]), (r["saved_proxy_pct"], r["test_100"]))
    ax.set_xlabel("FLOPs saved, proxy (%)")
    ax.set_title("held-out accuracy vs FLOPs saved (proxy)")
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)
