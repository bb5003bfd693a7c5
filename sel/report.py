"""The benchmark table: the original's columns, both FLOPs figures and saved % both ways."""

import pandas as pd

from .figures import LABELS

# The original's published table (one T4 GPU, ImageNet-initialised ResNet-18, official CIFAR-10).
PUBLISHED = {
    "baseline": {"test_100": 0.932, "flops_proxy_T": 33.5, "time_s": 1398},
    "lottery": {"test_100": 0.930, "flops_proxy_T": 6.7, "time_s": 1460},
    "sel95": {"test_100": 0.775, "flops_proxy_T": 0.084, "time_s": 835},
    "warmup_sel": {"test_100": 0.853, "flops_proxy_T": 1.58, "time_s": 875},
}


def summary_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per experiment; saved % are relative to the baseline when it is present."""
    rows = []
    base = summaries.get("baseline", {})
    for name, s in summaries.items():
        row = {"experiment": name, "system": LABELS.get(name, name)}
        row.update({k: s[k] for k in ("test_full", "test_100", "flops_proxy_T", "flops_executed_T",
                                      "flops_eval_T", "time_s", "epochs")})
        # SEL rows: the sparsity of the SEL epochs (a warm-up's dense epochs would dilute it)
        row["sparsity"] = s["sel_sparsity_mean"] if s.get("sel_sparsity_mean") is not None else s["sparsity_mean"]
        for kind in ("proxy", "executed"):
            ref = base.get(f"flops_{kind}_T")
            row[f"saved_{kind}_pct"] = 100 * (1 - s[f"flops_{kind}_T"] / ref) if ref else None
        row["pretrain_time_s"] = s.get("pretrain_time_s", 0.0)
        row["pretrain_flops_executed_T"] = s.get("pretrain_flops_executed_T", 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def _pct(v):
    return "n/a" if v is None or pd.isna(v) else f"{v:.1f}%"


def markdown(table: pd.DataFrame, variant: str, params_note: str) -> str:
    """The table as Markdown, with the original's published figures beside it."""
    lines = [f"# SEL benchmark ({variant})", "", params_note, "",
             "| System | Full test | Held-out | FLOPs proxy (T) | Executed FLOPs (T) | "
             "Time (s) | Saved, proxy | Saved, executed | Grad. sparsity |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['system']} | {r['test_full']:.1%} | {r['test_100']:.1%} | "
                     f"{r['flops_proxy_T']:.4g} | {r['flops_executed_T']:.4g} | {r['time_s']:.0f} | "
                     f"{_pct(r['saved_proxy_pct'])} | {_pct(r['saved_executed_pct'])} | {r['sparsity']:.1%} |")
    lottery = table[table["experiment"] == "lottery"]
    if len(lottery):
        r = lottery.iloc[0]
        lines += ["", f"Lottery's dense pre-training is outside its row, as in the original: "
                      f"{r['pretrain_time_s']:.0f} s and {r['pretrain_flops_executed_T']:.4g} T executed FLOPs more."]
    lines += ["", "Executed FLOPs: forward+backward conv/matmul arithmetic measured with "
                  "FlopCounterMode, times images trained (evaluation apart). The proxy is the "
                  "original's 2 x params x (1 - sparsity) x images.", "",
              "The original's published table (T4 GPU, ImageNet init, official CIFAR-10):", "",
              "| System | Held-out (100/class) | FLOPs proxy (T) | Time (s) |", "|---|---|---|---|"]
    for name, p in PUBLISHED.items():
        lines.append(f"| {LABELS[name]} | {p['test_100']:.1%} | {p['flops_proxy_T']} | {p['time_s']} |")
    return "\n".join(lines) + "\n"
