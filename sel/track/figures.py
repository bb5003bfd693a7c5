"""The figure of one run (logged to its MLflow run): accuracy, sparsity, per-class E and C."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

def _class_curves(ax, history: pd.DataFrame, prefix: str, title: str) -> None:
    for col in [c for c in history.columns if c.startswith(prefix)]:
        ax.plot(history["epoch"], history[col], label=col[len(prefix):], lw=1)
    ax.set_title(title)
    ax.set_xlabel("epoch")


def run_figure(history: pd.DataFrame, title: str, path: Path) -> None:
    """Accuracy, sparsity, E and C per class of one run."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0, 0]
    for col in ("acc/train_acc", "acc/test_full", "acc/test_100"):
        ax.plot(history["epoch"], history[col], label=col)
    ax.set_title("accuracy")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(history["epoch"], history["sparsity/sparsity"], label="gradient entries zeroed")
    ax.plot(history["epoch"], history["sparsity/params_changed"], label="weights the optimizer changed")
    ax.set_title("per step, mean over the epoch")
    ax.legend()
    _class_curves(axes[1, 0], history, "E/", "embarrassment E per class")
    _class_curves(axes[1, 1], history, "C/", "confidence C per class")
    axes[1, 1].legend(fontsize=7, ncol=2)
    fig.suptitle(title, parse_math=False)  # the title quotes the source: a `$` in it is no math
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
