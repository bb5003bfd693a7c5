"""The benchmark's summary figure: mean curves over seeds with their 95% band, per-class E and C
of SEL-95, and accuracy against compute (proxy and executed) with error bars, one colour per
experiment; a caption names the protocol. Raster for the README, vector for print."""

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sel.config.names import label  # noqa: E402
from sel.report.summary import classes_of, colours, ec_measured, partial  # noqa: E402

CURVES = [("acc/test_full", "test accuracy (full test set)"), ("acc/test_100", "held-out accuracy"),
          ("acc/train_acc", "train accuracy"), ("sparsity/sparsity", "gradient entries zeroed per step"),
          ("sparsity/params_changed", "weights changed per step"),
          ("sparsity/gamma", "gamma (mean over steps)"),
          ("compute/flops_proxy_T", "cumulative FLOPs, original's proxy (T)"),
          ("compute/flops_executed_T", "cumulative FLOPs, executed (T)"), ("compute/time_s", "wall time (s)")]
# drawn last and dashed, so that a curve the baseline's matches (the lottery's) cannot hide it
ON_TOP = {"baseline": {"ls": "--", "zorder": 5, "lw": 1.8}}


def summary_figure(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]], summary: dict, caption: str,
                   png: Path, svg: Path) -> None:
    """`curves`: {experiment: (mean, half-width)} per epoch; `summary`: report.summarise's;
    `caption`: the protocol, printed under the title."""
    fig, axes = plt.subplots(4, 4, figsize=(22, 17))
    colour = colours(list(curves))
    for ax, (col, title) in zip(axes[:3, :3].flat, CURVES):
        for name, (mean, half) in curves.items():
            style = {"lw": 1.3, **ON_TOP.get(name, {})}
            ax.plot(mean["epoch"], mean[col], color=colour[name], label=label(name), **style)
            ax.fill_between(mean["epoch"], mean[col] - half[col], mean[col] + half[col],
                            color=colour[name], alpha=0.15, lw=0)
        ax.set_title(title + (" (per epoch)" if col.startswith("sparsity/") else ""))
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0, 0].legend(fontsize=8)
    _class_panels(axes[3], curves, colour)
    panels = [("compute/saved_proxy_pct", "FLOPs saved, original's proxy (%)"),
              ("compute/saved_executed_pct", "FLOPs saved, executed (%)"),
              ("compute/flops_executed_T", "executed FLOPs (T)")]
    for ax, (metric, xlabel) in zip(axes[:, 3], panels):
        for e in summary["experiments"]:
            x, y = e["metrics"].get(metric), e["metrics"].get("acc/test_full")
            if x is None or y is None:
                continue
            ax.errorbar(x["mean"], 100 * y["mean"], xerr=_err(x), yerr=_err(y, 100), fmt="o",
                        color=colour.get(e["experiment"]), capsize=3, label=e["system"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("accuracy vs compute (95% intervals)")
    gap = partial(summary)
    fig.suptitle(textwrap.fill((f"{gap[0]} (summary.md names the missing). " if gap else "") +
                               "SEL benchmark: mean over seeds; bands and bars: 95% confidence intervals "
                               "(Student t). Sparsity and weights changed: per epoch in the curves, mean "
                               f"over the masked epochs in summary.md. {caption}", 190), fontsize=11,
                 parse_math=False)  # the caption quotes the source: a `$` in it is no math
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(png, dpi=110, format="png")
    fig.savefig(svg, format="svg")
    plt.close(fig)


def _class_panels(axes, curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]], colour: dict) -> None:
    """SEL-95's (else the first run's) E and C per class over its measured epochs, and the
    last epoch's accuracy per class of every experiment."""
    name = "sel95" if "sel95" in curves else next(iter(curves))
    mean = curves[name][0]
    classes = classes_of(mean)
    measured = mean[ec_measured(mean)]
    for ax, kind, what in ((axes[0], "E", "embarrassment E"), (axes[1], "C", "confidence C")):
        for c in classes:
            ax.plot(measured["epoch"], measured[f"{kind}/{c}"], label=c, lw=1)
        ax.set_title(f"{label(name)}: {what} per class")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=7, ncol=2)
    ax = axes[2]
    width = 0.8 / len(curves)
    for i, (run, (m, _)) in enumerate(curves.items()):
        ax.bar([k + i * width for k in range(len(classes))], [m[f"class_acc/{c}"].iloc[-1] for c in classes],
               width, label=label(run), color=colour[run])
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(classes))], classes, rotation=45, fontsize=8)
    ax.set_title("accuracy per class, last epoch (full test set)")
    axes[3].axis("off")


def _err(stat: dict, scale: float = 1) -> float | None:
    return None if stat["ci_low"] is None else scale * (stat["ci_high"] - stat["mean"])
