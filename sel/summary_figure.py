"""The benchmark's summary figure: mean curves over seeds with their 95% band, and accuracy
against compute (proxy and executed) with error bars, one colour per experiment."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .figures import label  # noqa: E402

CURVES = [("test_full", "test accuracy (full test set)"), ("test_100", "held-out accuracy"),
          ("train_acc", "train accuracy"), ("sparsity", "gradient entries zeroed per step"),
          ("params_changed", "weights changed per step"), ("gamma", "gamma (mean over steps)"),
          ("flops_proxy_T", "cumulative FLOPs, original's proxy (T)"),
          ("flops_executed_T", "cumulative FLOPs, executed (T)"), ("time_s", "wall time (s)")]


def summary_figure(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]], summary: dict, path: Path) -> None:
    """`curves`: {experiment: (mean, half-width)} per epoch; `summary`: report.summarise's."""
    fig, axes = plt.subplots(3, 4, figsize=(22, 13))
    colours = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    colour = {name: colours(i) for i, name in enumerate(curves)}
    for ax, (col, title) in zip(axes[:, :3].flat, CURVES):
        for name, (mean, half) in curves.items():
            ax.plot(mean["epoch"], mean[col], color=colour[name], label=label(name), lw=1.3)
            ax.fill_between(mean["epoch"], mean[col] - half[col], mean[col] + half[col],
                            color=colour[name], alpha=0.15, lw=0)
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0, 0].legend(fontsize=8)
    panels = [("saved_proxy_pct", "FLOPs saved, original's proxy (%)"),
              ("saved_executed_pct", "FLOPs saved, executed (%)"),
              ("flops_executed_T", "executed FLOPs (T)")]
    for ax, (metric, xlabel) in zip(axes[:, 3], panels):
        for e in summary["experiments"]:
            x, y = e["metrics"].get(metric), e["metrics"].get("test_full")
            if x is None or y is None:
                continue
            ax.errorbar(x["mean"], 100 * y["mean"], xerr=_err(x), yerr=_err(y, 100), fmt="o",
                        color=colour.get(e["experiment"]), capsize=3, label=e["system"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("accuracy vs compute (95% intervals)")
    seeds = ", ".join(map(str, summary["seeds"]))
    fig.suptitle(f"Mean over seeds {seeds}; bands and bars: 95% confidence intervals (Student t)")
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)


def _err(stat: dict, scale: float = 1) -> float | None:
    return None if stat["ci_low"] is None else scale * (stat["ci_high"] - stat["mean"])
