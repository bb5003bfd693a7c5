"""The benchmark's summary over seeds: per experiment and metric the mean, sd, n and 95%
interval; each experiment's paired difference to the baseline; the attribution of SEL's
accuracy gap to its factors (params.yaml `attribution`); time-to-accuracy, read on the validation
split; each experiment against the dense frontier (sel/report/frontier.py); mean curves per epoch."""

import numpy as np
import pandas as pd

from sel.config.names import label
from sel.report.frontier import OUTSIDE, frontier
from sel.report.stats import binomial_se, describe, joint_level, paired

# Final-epoch figures of a run's summary.json that the summary describes over seeds.
# Names are the history's `section/column` (MLflow's chart sections), as in every run.
METRICS = ("acc/test_full", "acc/test_100", "compute/flops_proxy_T", "compute/flops_executed_T",
           "compute/time_s", "compute/train_time_s", "sparsity/sparsity", "sparsity/params_changed", "compute/saved_proxy_pct",
           "compute/saved_executed_pct")
SECONDS = {"compute/time_s", "compute/train_time_s"}  # shown as whole seconds
PERCENT = {"acc/test_full", "acc/test_100", "sparsity/sparsity", "sparsity/params_changed"}  # shown as %

# One colour per experiment in every view (summary figure, results page, `dvc plots`, whose
# template .dvc/plots/experiments.json lists the same by label): baseline and lottery far apart.
COLOURS = {"baseline": "#1f77b4", "lottery": "#d62728", "sel95": "#2ca02c", "warmup_sel": "#ff7f0e",
           "baseline_masked": "#9467bd", "sel_dense_grads": "#8c564b", "sel_constant_lr": "#e377c2",
           "random_subsets": "#7f7f7f", "sel_random_order": "#bcbd22", "sel95_target": "#17becf",
           "baseline_linear": "#aec7e8", "dense_at_sel95": "#98df8a", "selective_50": "#ff9896",
           "selective_25": "#c5b0d5", "class_draw_50": "#c49c94", "class_draw_25": "#f7b6d2",
           "infobatch_r50": "#c7c7c7", "infobatch_r70": "#dbdb8d", "dense_at_class_draw_50": "#9edae5",
           "dense_at_class_draw_25": "#ffbb78", "dense_at_selective_50": "#e7ba52",
           "dense_at_selective_25": "#843c39"}
SPARE = ["#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd"]  # experiments of your own


def colours(names: list[str]) -> dict[str, str]:
    """Each experiment's colour (by its params name or its label): its own, or a spare one."""
    known = {**COLOURS, **{label(name): c for name, c in COLOURS.items()}}
    spare = iter(SPARE * len(names))
    return {name: known.get(name) or next(spare) for name in names}


# The original's published table (one T4 GPU, ImageNet-initialised ResNet-18, official CIFAR-10).
PUBLISHED = {
    "baseline": {"acc/test_100": 0.932, "compute/flops_proxy_T": 33.5, "compute/time_s": 1398},
    "lottery": {"acc/test_100": 0.930, "compute/flops_proxy_T": 6.7, "compute/time_s": 1460},
    "sel95": {"acc/test_100": 0.775, "compute/flops_proxy_T": 0.084, "compute/time_s": 835},
    "warmup_sel": {"acc/test_100": 0.853, "compute/flops_proxy_T": 1.58, "compute/time_s": 875},
}


def per_seed_values(summaries: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict[int, float]]]:
    """{experiment: {metric: {seed: value}}}; saved % against the same seed's baseline."""
    base = summaries.get("baseline", {})
    out = {}
    for name, by_seed in summaries.items():
        values = {m: {} for m in METRICS}
        for seed, s in by_seed.items():
            for m in METRICS:
                if m in s:
                    values[m][seed] = s[m]
            for kind in ("proxy", "executed"):
                ref = base.get(seed, {}).get(f"compute/flops_{kind}_T")
                if ref:
                    values[f"compute/saved_{kind}_pct"][seed] = 100 * (1 - s[f"compute/flops_{kind}_T"] / ref)
        out[name] = values
    return out


# Time-to-accuracy (DESIGN.md, "Savings and budgets"): targets as fractions of the dense
# baseline's final mean validation accuracy, and what a run had spent when its validation
# accuracy first reached one (the runs' validation.csv: sel/experiments/validation.py). Both are
# read on the validation split, never on the test set, which the final accuracies are read on.
TARGETS = (0.90, 0.95, 1.00)
SPENT = {"compute/flops_executed_T": "Executed FLOPs (T)", "compute/train_time_s": "Training time (s)"}


def spent_to_reach(curve: pd.DataFrame, accuracy: float) -> dict | None:
    """Cumulative executed FLOPs and training seconds at which a validation curve (validation.csv,
    evaluations in order from step 0) first reached `accuracy`: linearly interpolated between the
    first pair of consecutive evaluations a0 < accuracy <= a1, so a coarse `train.val_every`
    does not charge a run for the steps after it got there; what step 0 had if it started there.
    None: no evaluation reached it."""
    acc = curve["acc/val"].to_numpy()
    hits = np.flatnonzero(acc >= accuracy)
    if not len(hits):
        return None
    i = hits[0]
    if i == 0:
        return {m: float(curve[m].iloc[0]) for m in SPENT}
    share = (accuracy - acc[i - 1]) / (acc[i] - acc[i - 1])
    return {m: float(curve[m].iloc[i - 1] + share * (curve[m].iloc[i] - curve[m].iloc[i - 1])) for m in SPENT}


def time_to_accuracy(curves: dict[str, dict[int, pd.DataFrame]], reference: float | None,
                     targets: tuple[float, ...] = ()) -> list[dict]:
    """Per experiment and target (TARGETS of the baseline's `reference` when there is one, then the
    absolute `targets`, params.yaml `report.targets`), the seeds that reached it and, when every
    seed did, the mean and 95% interval of what they spent; a mean over the seeds that happened to
    get there would flatter a run that mostly does not, so then only the count is given ("not
    reached"). `curves`: {experiment: {seed: validation curve}}."""
    goals = [(fraction, fraction * reference, False) for fraction in (TARGETS if reference is not None else ())]
    goals += [(accuracy, accuracy, True) for accuracy in targets]
    rows = []
    for name, by_seed in curves.items():
        for target, accuracy, absolute in goals:
            spent = {seed: spent_to_reach(c, accuracy) for seed, c in by_seed.items()}
            reached = [seed for seed, v in spent.items() if v is not None]
            every = len(reached) == len(spent)
            rows.append({"experiment": name, "target": target, "absolute": absolute, "accuracy": accuracy,
                         "seeds": sorted(spent), "reached": sorted(reached),
                         **{m: describe(v[m] for v in spent.values()) if every else None for m in SPENT}})
    return rows


def target_label(row: dict) -> str:
    """A time-to-accuracy target as tables and charts name it: "92% val" (absolute) or "90% of
    baseline (81.0%)" (a fraction of the baseline's final validation accuracy)."""
    if row.get("absolute"):
        return f"{100 * row['target']:g}% val"
    return f"{row['target']:.0%} of baseline ({row['accuracy']:.1%})"


def _target_key(row: dict) -> str:
    """A target in MLflow's and headline.json's names: `val92` (absolute) or `acc90` (fraction)."""
    return f"val{100 * row['target']:g}" if row.get("absolute") else f"acc{round(100 * row['target'])}"


def final_validation(curves: dict[int, pd.DataFrame]) -> float | None:
    """The mean over seeds of the last epoch-end validation accuracy; None if a run has no
    validation split (its curve is empty)."""
    if not curves or any(c.empty for c in curves.values()):
        return None
    return float(np.mean([c["acc/val"].iloc[-1] for c in curves.values()]))


def summarise(summaries: dict[str, dict[int, dict]], attribution: dict[str, tuple[str, str]],
              validations: dict[str, dict[int, pd.DataFrame]] | None = None,
              schedules: dict[str, str] | None = None, n_test: int | None = None,
              targets: tuple[float, ...] = (), ladders: dict[str, dict[str, float | None]] | None = None,
              missing: list[tuple[str, int]] = ()) -> dict:
    """Everything summary.json holds: statistics per experiment and metric, what other training
    ran beside its seeds ({seed: names}, from the runs' summaries), the paired
    difference of each experiment to the baseline, the attribution rows and, from the validation
    curves (`validations`: {experiment: {seed: validation.csv}}), the time to accuracy to fractions
    of the baseline's final validation accuracy and to the absolute `targets`: none when a run has
    no validation split. `schedules` ({experiment: lr_schedule}) puts on each comparison the
    schedules it pairs, `n_test` (test images) lets summary.md size the test set's own sampling
    error, `ladders` (frontier.frontier_rungs) adds each experiment's place against the dense
    frontier, and `missing` (runs.read_runs) names the listed runs that have not trained: the
    summary is then partial, and every view says so."""
    values = per_seed_values(summaries)
    pair = (lambda a, b: {"schedules": [schedules[a], schedules[b]]}) if schedules else (lambda a, b: {})
    experiments = []
    for name, by_metric in values.items():
        row = {"experiment": name, "system": label(name), "seeds": sorted(summaries[name]),
               "metrics": {m: {**describe(v.values()), "values": v} for m, v in by_metric.items() if v},
               "beside": {seed: s["beside"] for seed, s in summaries[name].items() if s.get("beside")},
               "beside_unknown": sorted(seed for seed, s in summaries[name].items() if "beside" not in s)}
        if name != "baseline" and "baseline" in values:
            row["vs_baseline"] = {m: paired(by_metric[m], values["baseline"][m])
                                  for m in ("acc/test_full", "acc/test_100") if by_metric[m]}
            row.update(pair(name, "baseline"))
        experiments.append(row)
    rows = []
    for factor, (with_it, without_it) in attribution.items():
        if with_it in values and without_it in values:
            diff = paired(values[with_it]["acc/test_full"], values[without_it]["acc/test_full"])
            if diff is not None:
                rows.append({"factor": factor, "with": with_it, "without": without_it, "acc/test_full": diff,
                             **pair(with_it, without_it)})
    validations = validations or {}
    reference = final_validation(validations.get("baseline", {}))
    every_split = all(not c.empty for by_seed in validations.values() for c in by_seed.values())
    to_target = time_to_accuracy(validations, reference, targets) if every_split else []
    return {"seeds": sorted({s for by_seed in summaries.values() for s in by_seed}),
            **({"missing": [[name, seed] for name, seed in missing]} if missing else {}),
            "experiments": experiments, "attribution": rows, "time_to_accuracy": to_target,
            **({"n_test": n_test} if n_test else {}),
            **({"frontier": frontier(values, ladders, schedules or {})} if ladders is not None else {})}


# The few figures per experiment that `dvc exp show` and `dvc metrics diff` compare (DVC shows
# the leaves of metrics/headline.json as columns): final accuracy with its interval, executed
# compute, wall-clock, sparsity and what it spent to reach 90% of the baseline's validation
# accuracy (HEADLINE_TARGET) and each absolute target; they grow with experiments, not with seeds.
HEADLINE = {"acc/test_full": "test_full", "compute/flops_executed_T": "flops_executed_T",
            "compute/time_s": "time_s", "sparsity/sparsity": "sparsity"}


HEADLINE_TARGET = 0.90


def headline(summary: dict) -> dict:
    """{experiment: {figure: value}}: means over seeds, the accuracy's 95% interval, and the mean
    executed FLOPs and training seconds to HEADLINE_TARGET of the baseline's validation accuracy
    (`to90_flops_executed_T`, `to90_train_time_s`) and to each absolute target (`to_val92_...`)
    where every seed reached it: a saving is judged by what reaching an accuracy cost, not by
    what a shorter run spent."""
    out = {}
    to_targets = [r for r in summary.get("time_to_accuracy", []) if r.get("absolute") or r["target"] == HEADLINE_TARGET]
    for e in summary["experiments"]:
        figures = {}
        for metric, name in HEADLINE.items():
            stat = e["metrics"].get(metric)
            if stat is not None:
                figures[name] = stat["mean"]
                if metric == "acc/test_full" and stat["ci_low"] is not None:
                    figures.update({f"{name}_ci_low": stat["ci_low"], f"{name}_ci_high": stat["ci_high"]})
        for r in (r for r in to_targets if r["experiment"] == e["experiment"]):
            prefix = f"to_{_target_key(r)}" if r.get("absolute") else f"to{round(100 * r['target'])}"
            for metric in SPENT:
                if r[metric] is not None:
                    figures[f"{prefix}_{metric.rpartition('/')[2]}"] = r[metric]["mean"]
        out[e["experiment"]] = figures
    return out


def mlflow_metrics(summary: dict, point: str = "") -> dict:
    """`<metric>/<point><experiment>.<mean|sd|ci_low|ci_high|n>` (the metric without its
    section: `test_full/sel95.mean`; a sweep's point as `p1.`) and `attribution/<factor>.<...>`:
    MLflow's chart sections then hold one metric each, every experiment side by side; time to
    accuracy as `to_acc90/...` (a fraction of the baseline's) and `to_val92/...` (absolute)."""
    out = {}
    for e in summary["experiments"]:
        for metric, stat in e["metrics"].items():
            leaf = metric.rpartition("/")[2]
            out.update({f"{leaf}/{point}{e['experiment']}.{k}": stat[k]
                        for k in ("mean", "sd", "ci_low", "ci_high", "n")})
    for r in summary["attribution"]:
        diff = r["acc/test_full"]
        out.update({f"attribution/{point}{r['factor']}.{k}": diff[k] for k in ("mean", "ci_low", "ci_high", "n")})
    for r in summary.get("time_to_accuracy", []):
        section = f"to_{_target_key(r)}/{point}{r['experiment']}"
        out[f"{section}.reached"] = len(r["reached"])
        for metric in SPENT:
            if r[metric] is not None:
                leaf = metric.rpartition("/")[2]
                out.update({f"{section}.{leaf}.{k}": r[metric][k] for k in ("mean", "ci_low", "ci_high", "n")})
    return {k: v for k, v in out.items() if v is not None}


NAMED_MISSING = 12  # missing runs the partial line names; it counts the rest


def partial(summary: dict) -> tuple[str, str] | None:
    """("Partial: 17 of 39 runs", "missing: baseline@43, ... and 5 more") of a summary made before
    every listed run had trained, for summary.md, the results page and the figure to lead with;
    None when none is missing."""
    missing = [f"{name}@{seed}" for name, seed in summary.get("missing", [])]
    if not missing:
        return None
    done = sum(len(e["seeds"]) for e in summary["experiments"])
    rest = len(missing) - NAMED_MISSING
    named = ", ".join(missing[:NAMED_MISSING]) + (f" and {rest} more" if rest > 0 else "")
    return f"Partial: {done} of {done + len(missing)} runs", f"missing: {named}"


def cell(stat: dict | None, metric: str, digits: str = ".4g") -> str:
    """mean ± half the 95% interval (the mean alone for one seed)."""
    if stat is None:
        return "n/a"
    scale, unit, fmt = (100, "%", ".1f") if metric in PERCENT else (1, "", digits)
    if metric.endswith("_pct"):
        unit, fmt = "%", ".1f"
    text = f"{stat['mean'] * scale:{fmt}}"
    if stat["ci_low"] is not None:
        text += f" ± {(stat['ci_high'] - stat['mean']) * scale:{fmt}}"
    return text + unit


def _points(stat: dict | None) -> str:
    """A difference of accuracies in percentage points, with its 95% interval."""
    if stat is None:
        return "n/a"
    text = f"{100 * stat['mean']:+.1f}"
    if stat["ci_low"] is not None:
        text += f" [{100 * stat['ci_low']:+.1f}, {100 * stat['ci_high']:+.1f}]"
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(row) + " |" for row in rows]


def markdown(summary: dict, note: str, held_out_is_test_set: bool = False) -> str:
    """The tables of summary.md: results, paired differences, attribution, the original's.
    `held_out_is_test_set`: the held-out subset is the whole (reduced) test set, so its column
    would repeat the full test's; it is left out and a line says why."""
    n = len(summary["seeds"])
    accuracies = {"acc/test_full": "Full test"} if held_out_is_test_set else \
        {"acc/test_full": "Full test", "acc/test_100": "Held-out"}
    columns = {**accuracies, "compute/flops_proxy_T": "FLOPs proxy (T)",
               "compute/flops_executed_T": "Executed FLOPs (T)", "compute/time_s": "Time (s)",
               "compute/train_time_s": "Training (s)",
               "compute/saved_proxy_pct": "Saved, proxy", "compute/saved_executed_pct": "Saved, executed",
               "sparsity/sparsity": "Grad. sparsity", "sparsity/params_changed": "Params changed"}
    lines = ["# SEL benchmark", ""]
    if gap := partial(summary):
        lines += [f"**{gap[0]}** ({gap[1]}: `dvc repro` trains them)", ""]
    lines += [note, "",
              f"Seeds: {', '.join(map(str, summary['seeds']))}. Each cell is the final epoch's mean over "
              f"the seeds{' ± half its 95% confidence interval (Student t)' if n > 1 else ''}. "
              "Grad. sparsity: gradient entries zeroed per step; params changed: weights the optimizer "
              "step changed; both over the masked epochs (every epoch of a dense run)."
              + (" The held-out subset is the whole test set here (data.held_out_per_class = "
                 "data.test_per_class), so its accuracy is the full test's and has no column of its own."
                 if held_out_is_test_set else ""), ""]
    lines += _table(["System", "n", *columns.values()], [
        [e["system"], str(len(e["seeds"]))] + [cell(e["metrics"].get(k), k, ".0f" if k in SECONDS else ".4g")
                                               + (_time_mark(e) if k in SECONDS else "")
                                               for k in columns] for e in summary["experiments"]])
    lines += _beside_lines(summary["experiments"])
    lines += ["", "Paired difference to the baseline (same seeds), percentage points [95% interval]:", ""]
    compared = [e for e in summary["experiments"] if "vs_baseline" in e]
    schedule_column = ["Schedules"] if any("schedules" in e for e in compared) else []
    lines += _table(["System", *accuracies.values(), *schedule_column], [
        [e["system"] + _schedule_mark(e)] + [_points(e["vs_baseline"].get(k)) for k in accuracies]
        + ([_schedules(e)] if "schedules" in e else []) for e in compared])
    lines += _interval_lines([e["vs_baseline"].get(k) for e in compared for k in accuracies], compared, summary)
    if summary["attribution"]:
        lines += ["", "## Where SEL's accuracy goes", "",
                  "Each factor: the paired difference of full-test accuracy between a run with it and "
                  "the same run without it (params.yaml `attribution`), percentage points [95% "
                  "interval]. Leave-one-out differences need not add up to the total: factors interact.",
                  ""]
        lines += _table(["Factor", "With it", "Without it", "Points", "n",
                         *(["Schedules"] if any("schedules" in r for r in summary["attribution"]) else [])], [
            [r["factor"].replace("_", " ") + _schedule_mark(r), label(r["with"]), label(r["without"]),
             _points(r["acc/test_full"]), str(r["acc/test_full"]["n"])] + ([_schedules(r)] if "schedules" in r else [])
            for r in summary["attribution"]])
        lines += _interval_lines([r["acc/test_full"] for r in summary["attribution"]], summary["attribution"], summary)
    lines += _time_to_accuracy_lines(summary.get("time_to_accuracy", []))
    lines += _frontier_lines(summary)
    lines += ["", "Executed FLOPs: conv/matmul arithmetic measured with FlopCounterMode, every pass a run "
                  "executes counted (evaluation apart): a forward+backward per image trained; selective "
                  "backward's forward of every candidate; for a run that reads SEL's pools or gamma, the "
                  "sort stage's forward of every training image (and its scorer's epochs, if any) and "
                  "calibration's forward+backward of one batch, before its first epoch, so its dense twin's "
                  "budget holds them too. The proxy is the original's 2 x params x (1 - sparsity) x images "
                  "trained. Time: training and evaluation, and the sort and calibrate stages' seconds where "
                  "the run reads them; Training: the same without evaluation.", "",
              "The original's published table (T4 GPU, ImageNet init, official CIFAR-10):", "",
              "| System | Held-out (100/class) | FLOPs proxy (T) | Time (s) |", "|---|---|---|---|"]
    for name, p in PUBLISHED.items():
        lines.append(f"| {label(name)} | {p['acc/test_100']:.1%} | {p['compute/flops_proxy_T']} | "
                     f"{p['compute/time_s']} |")
    return "\n".join(lines) + "\n"


SCHEDULE_MARK = " ‡"  # a comparison of two runs whose learning-rate schedules differ


def _schedule_mark(row: dict) -> str:
    return SCHEDULE_MARK if len(set(row.get("schedules", ()))) > 1 else ""


def _schedules(row: dict) -> str:
    return " / ".join(row["schedules"])


def _interval_lines(diffs: list[dict | None], rows: list[dict], summary: dict) -> list[str]:
    """What a table of paired intervals covers: how many it shows, each at 95% alone (and the
    level that would hold them jointly), over seeds only, not the test images' sampling (its
    size, from the baseline's accuracy and the test set's size); and the schedule footnote."""
    count = sum(d is not None and d["ci_low"] is not None for d in diffs)
    if not count:
        return []
    text = (f"{count} comparison{'s' if count > 1 else ''} with an interval. Each 95% interval holds for its own "
            "comparison, not corrected for multiplicity: "
            + (f"with {count} comparisons, an interval that excludes zero at 95% each would need "
               f"{joint_level(count):.1%} to hold jointly (Bonferroni). " if count > 1 else "")
            + "The intervals cover the seeds, paired by seed (Student t over the per-seed differences); they "
              "ignore the sampling of the test images, which every run shares")
    base = next((e["metrics"].get("acc/test_full") for e in summary["experiments"] if e["experiment"] == "baseline"),
                None)
    if summary.get("n_test") and base:
        text += (f": a single run's accuracy on {summary['n_test']:,} test images has a binomial s.e. of "
                 f"{100 * binomial_se(base['mean'], summary['n_test']):.1f} points (at the baseline's "
                 f"{base['mean']:.1%})")
    lines = ["", text + "."]
    if any(_schedule_mark(r) for r in rows):
        lines += ["", f"{SCHEDULE_MARK.strip()} The two runs have different learning-rate schedules: this row "
                      "compares schedules as well as methods."]
    return lines


TO_ACCURACY_HEADING = "## Time to accuracy"  # the results page finds its table under it
TO_ACCURACY_NOTE = ("What each run had spent (cumulative, evaluation apart) when its accuracy on the validation "
                    "split (data.val_per_class training images per class, never trained on) first reached a "
                    "fraction of the baseline's final mean validation accuracy (\"90% of baseline\") or an "
                    "absolute accuracy (\"92% val\", params.yaml report.targets), interpolated linearly between "
                    "the two evaluations around the crossing (every train.val_every steps and at epoch ends); "
                    "a mean needs every seed to reach it. Compare a method with the dense run at its budget "
                    "(params.yaml `attribution`) or with the dense frontier (below).")
NO_VALIDATION = ("Not computed: it needs a validation split in every run (data.val_per_class > 0) and a "
                 "baseline or report.targets, as its targets and crossings are read on the validation split, "
                 "never on the test set.")
FRONTIER_HEADING = "## Against the dense frontier"
FRONTIER_NOTE = ("The dense frontier of a learning-rate schedule: its dense runs with no method, mask or loss-scaled "
                 "lr, at a ladder of budgets (shares of the images; 100%: all). Each other run's final full-test "
                 "accuracy minus the frontier's, read per seed on the line through that seed's rungs (in order of "
                 "their own cost) at the run's executed FLOPs and at its training seconds, paired by seed, "
                 "percentage points [95% interval]; a seed whose cost lies outside the rungs' range gives none "
                 f"({OUTSIDE}: no extrapolation). Verdict, at equal FLOPs: saves where the interval lies wholly "
                 "above zero, below the frontier where wholly below, not detectably different where it holds zero.")
NO_FRONTIER = ("Not computed: it needs at least two dense rungs on one learning-rate schedule (dense runs with no "
               "method knob, e.g. the baseline and one at `budget: 0.5`).")


BESIDE_MARK = " †"  # a time measured with other training beside it
UNKNOWN_MARK = " ?"  # a time of a run that did not record what ran beside it


def _time_mark(e: dict) -> str:
    return (BESIDE_MARK if e.get("beside") else "") + (UNKNOWN_MARK if e.get("beside_unknown") else "")


def _beside_lines(experiments: list[dict]) -> list[str]:
    """The footnotes to the table's times: which seeds trained with other training on the same
    host (sampled at each epoch end), and what that was; those times are not the method's own.
    Runs written before this was recorded are said to be unknown, not clean."""
    lines = []
    crowded = [e for e in experiments if e.get("beside")]
    if crowded:
        seen = "; ".join(f"{e['system']}: " + ", ".join(f"seed {seed} beside {' '.join(names)}"
                                                        for seed, names in sorted(e["beside"].items()))
                         for e in crowded)
        lines += ["", f"{BESIDE_MARK.strip()} Time measured with other training running on the same host "
                      f"(at an epoch end) in some seed, so not the run's own: {seen}."]
    if any(e.get("beside_unknown") for e in experiments):
        lines += ["", f"{UNKNOWN_MARK.strip()} These runs did not record whether other training ran "
                      "beside them (they were made before it was recorded): their times may include it."]
    return lines


def _time_to_accuracy_lines(rows: list[dict]) -> list[str]:
    """summary.md's time-to-accuracy table: what each run spent to first reach each target, or
    the line saying why there is none."""
    if not rows:
        return ["", TO_ACCURACY_HEADING, "", NO_VALIDATION]

    def spent(r: dict, metric: str) -> str:
        if r[metric] is None:
            return f"not reached ({len(r['reached'])}/{len(r['seeds'])} seeds)"
        return cell(r[metric], metric, ".0f" if metric in SECONDS else ".4g")

    lines = ["", TO_ACCURACY_HEADING, "", TO_ACCURACY_NOTE, ""]
    return lines + _table(["System", "Target", *SPENT.values()], [
        [label(r["experiment"]), target_label(r)] + [spent(r, m) for m in SPENT]
        for r in rows])


def _frontier_lines(summary: dict) -> list[str]:
    """summary.md's section on the dense frontier: its rungs per schedule, then each other run's
    differences to it and verdict, and what the intervals cover; none for a summary made without
    the experiments' specs (a sweep's)."""
    if "frontier" not in summary:
        return []
    rungs, rows = summary["frontier"]["rungs"], summary["frontier"]["comparisons"]
    if not rungs:
        return ["", FRONTIER_HEADING, "", NO_FRONTIER]
    lines = ["", FRONTIER_HEADING, "", FRONTIER_NOTE, ""]
    lines += _table(["Schedule", "Rung", "Budget", "Full test", *SPENT.values()], [
        [schedule, label(r["experiment"]), "100%" if r["budget"] is None else f"{r['budget']:.0%}",
         cell(r.get("acc/test_full"), "acc/test_full")]
        + [cell(r.get(m), m, ".0f" if m in SECONDS else ".4g") for m in SPENT]
        for schedule, ladder in rungs.items() for r in ladder])
    if not rows:
        return lines
    lines += [""] + _table(["System", "Frontier", "Executed FLOPs (% of the 100% rung's)", "At equal FLOPs",
                            "At equal time", "Verdict"], [
        [label(r["experiment"]) + _schedule_mark(r), r["schedules"][1],
         "n/a" if r["flops_pct"] is None else f"{r['flops_pct']:.0f}%", *(_against(r[m]) for m in SPENT),
         r["verdict"]] for r in rows])
    return lines + _interval_lines([r[m]["difference"] for r in rows for m in SPENT], rows, summary)


def _against(comparison: dict) -> str:
    """A difference to the frontier in points [95% interval], with the seeds outside the ladder."""
    if comparison["difference"] is None:
        return OUTSIDE if comparison["outside"] else "n/a"
    n = len(comparison["outside"])
    return _points(comparison["difference"]) + (f" ({n} seed{'s' if n > 1 else ''} {OUTSIDE})" if n else "")


def mean_curves(histories: dict[int, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean, half-width of the 95% interval) of every history column per epoch, over the seeds
    that reached that epoch; the half-width is 0 where only one seed did."""
    stacked = pd.concat(histories.values())
    grouped = stacked.groupby("epoch")
    mean = grouped.mean().reset_index()
    half = grouped.agg(lambda col: _half_width(col.to_numpy())).reset_index()
    return mean, half


def classes_of(curve: pd.DataFrame) -> list[str]:
    """The class names of a history or curve, from its E/<class> columns."""
    return [c.removeprefix("E/") for c in curve.columns if c.startswith("E/")]


def ec_measured(curve: pd.DataFrame) -> pd.Series:
    """Which epochs measured E and C: a warm-up's record 0 for every class."""
    return (curve[[f"E/{c}" for c in classes_of(curve)]] != 0).any(axis=1)


def long_curves(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """Every experiment's mean curve in one table, named in an `experiment` column: the data of
    `dvc plots`, whose templates colour by that column (one colour per experiment)."""
    return pd.concat([mean[["epoch"]].assign(experiment=label(name)).join(mean.drop(columns="epoch"))
                      for name, (mean, _) in curves.items()], ignore_index=True)


def _half_width(x: np.ndarray) -> float:
    stat = describe(x)
    return 0.0 if stat["ci_high"] is None else stat["ci_high"] - stat["mean"]
