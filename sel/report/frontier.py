"""The dense frontier (DESIGN.md, "Savings and budgets"): the plain dense runs of one learning-rate
schedule at a ladder of budgets, the line a method must sit above. Each other experiment's final
test accuracy is compared, seed by seed, with that seed's frontier read at the experiment's own
executed FLOPs and at its own training time, and the differences are paired over seeds."""

import numpy as np

from sel.report.stats import describe, paired

METHOD_KNOBS = ("selective_keep", "class_draw", "infobatch_prune", "proxy_keep")  # a method's, not a rung's
ACCURACY = "acc/test_full"
COSTS = ("compute/flops_executed_T", "compute/train_time_s")  # what a frontier is read at
FALLBACK = "linear"  # the schedule whose frontier serves an experiment whose own has none
OUTSIDE = "outside the ladder"


def is_rung(spec) -> bool:
    """A plain dense run on a budget of its own: no method knob, mask or loss-scaled lr, and all
    of its images (budget None, the 100% rung) or a share of them (not another experiment's)."""
    return (spec.recipe == "dense" and all(getattr(spec, knob) is None for knob in METHOD_KNOBS)
            and not spec.masked and not spec.scaled_lr and not isinstance(spec.budget, str))


def frontier_rungs(specs: dict) -> dict[str, dict[str, float | None]]:
    """{lr_schedule: {rung: budget}} of `specs` ({experiment: params.yaml's experiment}), for every
    schedule with at least two rungs: one point is no line."""
    ladders = {}
    for name, spec in specs.items():
        if is_rung(spec):
            ladders.setdefault(spec.lr_schedule, {})[name] = spec.budget
    return {schedule: rungs for schedule, rungs in ladders.items() if len(rungs) >= 2}


def along(points: list[tuple[float, float]], cost: float) -> float | None:
    """The accuracy at `cost` on the line through (cost, accuracy) points taken in order of cost;
    None outside their range: the ladder says nothing below its cheapest or above its dearest rung."""
    costs, accuracies = zip(*sorted(points))
    if not costs[0] <= cost <= costs[-1]:
        return None
    return float(np.interp(cost, costs, accuracies))


def against(values: dict, name: str, rungs, cost: str) -> dict:
    """Experiment `name`'s final accuracy minus its frontier's at its own `cost`, seed by seed, over
    the seeds both have (`paired`), and the seeds whose cost lies outside that seed's ladder.
    `values`: {experiment: {metric: {seed: value}}} (summary.per_seed_values)."""
    at, outside = {}, []
    for seed, spent in values[name][cost].items():
        points = [(values[r][cost][seed], values[r][ACCURACY][seed]) for r in rungs
                  if seed in values[r][cost] and seed in values[r][ACCURACY]]
        accuracy = along(points, spent) if points else None
        if accuracy is not None:
            at[seed] = accuracy
        elif points:
            outside.append(seed)
    return {"difference": paired(values[name][ACCURACY], at), "outside": sorted(outside)}


def verdict(comparison: dict) -> str:
    """What the difference at equal FLOPs says: "saves" only where its 95% interval lies wholly
    above zero, "below the frontier" wholly below, "not detectably different" where it holds zero."""
    diff = comparison["difference"]
    if diff is None:
        return OUTSIDE if comparison["outside"] else "no seed in common"
    if diff["ci_low"] is None:
        return "no interval (one seed)"
    if diff["ci_low"] > 0:
        return "saves"
    if diff["ci_high"] < 0:
        return "below the frontier"
    return "not detectably different"


def _described(values: dict, name: str) -> dict:
    return {m: describe(values[name][m].values()) for m in (ACCURACY, *COSTS) if values[name][m]}


def frontier(values: dict, ladders: dict[str, dict[str, float | None]], schedules: dict[str, str]) -> dict:
    """summary.json's "frontier": per schedule its rungs (budget, and the mean and 95% interval of
    their accuracy, FLOPs and training time) in order of FLOPs, and per other experiment its
    differences to the frontier of its own schedule (else FALLBACK's, its `schedules` then
    differing) at equal FLOPs and at equal time, its FLOPs as % of the 100% rung's, its verdict."""
    rungs = {schedule: sorted(({"experiment": r, "budget": b, **_described(values, r)} for r, b in ladder.items()),
                              key=lambda rung: rung.get(COSTS[0], {}).get("mean", 0.0))
             for schedule, ladder in ladders.items()}
    on_a_ladder = {r for ladder in ladders.values() for r in ladder}
    comparisons = []
    for name in values:
        own = schedules.get(name)
        schedule = own if own in ladders else FALLBACK if FALLBACK in ladders else None
        if name in on_a_ladder or schedule is None:
            continue
        row = {"experiment": name, "schedules": [own or schedule, schedule],
               **{cost: against(values, name, ladders[schedule], cost) for cost in COSTS}}
        full = next((r for r in rungs[schedule] if r["budget"] is None and COSTS[0] in r), None)
        spent = list(values[name][COSTS[0]].values())
        row["flops_pct"] = float(100 * np.mean(spent) / full[COSTS[0]]["mean"]) if full and spent else None
        row["verdict"] = verdict(row[COSTS[0]])
        comparisons.append(row)
    return {"rungs": rungs, "comparisons": comparisons}
