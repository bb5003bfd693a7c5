"""The results page: one self-contained HTML file (Vega-Lite charts, the vendored scripts and
the data inlined) that opens offline by a double click, with the original page's panels plus
executed FLOPs, E/C per class, stage boundaries, seed bands and values on hover."""

import html
import json
import math
from pathlib import Path

import pandas as pd

from sel.config.names import label
from sel.report.frontier import METHOD_KNOBS
from sel.report.summary import TO_ACCURACY_HEADING, TO_ACCURACY_NOTE, colours, ec_measured, partial, target_label

VENDOR = Path(__file__).parents[1] / "vendor"
SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # an identifier; nothing is fetched

# (column, chart title, y axis title, d3 format of its values) of every per-epoch panel
LINES = [("acc/test_full", "Full test accuracy", "accuracy", ".1%"),
         ("acc/test_100", "Held-out accuracy (100 images per class)", "accuracy", ".1%"),
         ("acc/train_acc", "Train accuracy", "accuracy", ".1%"),
         ("gap", "Train - test gap", "accuracy points (fraction)", ".1%"),
         ("sparsity/sparsity", "Gradient entries zeroed per step", "fraction of entries", ".1%"),
         ("sparsity/params_changed", "Weights the optimizer changed per step", "fraction of weights", ".1%"),
         ("compute/flops_proxy_T", "Cumulative FLOPs, the original's proxy", "TFLOPs", ".4g"),
         ("compute/flops_executed_T", "Cumulative FLOPs, executed", "TFLOPs", ".4g"),
         ("compute/time_s", "Cumulative training time", "seconds", ".1f")]


# The groups a reader toggles on the page, in order: the original's four experiments, the
# controls that take SEL apart, the methods whose savings are executed, the dense runs at other
# experiments' budgets, and the rungs of the dense frontier the methods are judged against.
GROUPS = ("original", "control", "method", "dense twin", "dense frontier")
ORIGINALS = ("baseline", "lottery", "sel95", "warmup_sel")
FRONTIER_GROUP = "dense frontier"


def group_of(name: str, spec, rungs=()) -> str:
    """The page's group of experiment `name` with knobs `spec` (params.yaml's experiment); `rungs`:
    the frontiers' rungs (frontier.frontier_rungs), the original's four apart."""
    if name in ORIGINALS:
        return "original"
    if name in rungs:
        return FRONTIER_GROUP
    if isinstance(getattr(spec, "budget", None), str):
        return "dense twin"
    if any(getattr(spec, knob, None) is not None for knob in METHOD_KNOBS):
        return "method"
    return "control"


def _finite(v):
    """A value for a chart: None for nan or inf; a float to 4 significant digits, more than a
    chart shows, so that a page of many experiments stays small enough to keep in git."""
    if isinstance(v, (int, str)):
        return v
    return float(f"{v:.4g}") if v is not None and math.isfinite(v) else None


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _finite(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _with_gap(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(gap=frame["acc/train_acc"] - frame["acc/test_full"])


def line_rows(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]], groups: dict[str, str]) -> pd.DataFrame:
    """epoch, experiment, group, metric, mean, lo, hi: every per-epoch panel's data in one long
    table (lo/hi: the 95% band over seeds; the gap has none)."""
    parts = []
    for name, (mean, half) in curves.items():
        mean, half = _with_gap(mean), half.assign(gap=0.0)
        for col, *_ in LINES:
            parts.append(pd.DataFrame({"epoch": mean["epoch"], "experiment": label(name), "group": groups[name],
                                       "metric": col, "mean": mean[col], "lo": mean[col] - half[col],
                                       "hi": mean[col] + half[col]}))
    return pd.concat(parts, ignore_index=True)


def _toggles() -> tuple[list[dict], dict]:
    """(the params, the filter) by which a chart shows only the groups ticked on the page: one
    boolean signal per group, which the page's checkboxes set in every chart at once."""
    params = [{"name": _signal(g), "value": True} for g in GROUPS]
    test = " || ".join(f"(datum.group == {json.dumps(g)} && {_signal(g)})" for g in GROUPS)
    return params, {"filter": test}


def _signal(group: str) -> str:
    return "show_" + group.replace(" ", "_")


def class_rows(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]], classes: list[str]) -> pd.DataFrame:
    """epoch, experiment, class, E, C, class_acc: per-class curves; E and C are blank for epochs that did
    not measure them (a warm-up's dense epochs record 0 for every class)."""
    parts = []
    for name, (mean, _) in curves.items():
        for c in classes:
            part = pd.DataFrame({"epoch": mean["epoch"], "experiment": label(name), "class": c,
                                 "E": mean[f"E/{c}"], "C": mean[f"C/{c}"], "class_acc": mean[f"class_acc/{c}"]})
            part.loc[~ec_measured(mean), ["E", "C"]] = float("nan")
            parts.append(part)
    return pd.concat(parts, ignore_index=True)


def stage_boundaries(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> list[dict]:
    """Where a run's stage changes (between two epochs), once per place, naming the runs."""
    at = {}
    for name, (mean, _) in curves.items():
        stage = mean["schedule/stage"].round().astype(int).tolist()
        for i in range(1, len(stage)):
            if stage[i] != stage[i - 1]:
                at.setdefault(float(mean["epoch"].iloc[i]) - 0.5, []).append(
                    f"{label(name)}: stage {stage[i - 1]} -> {stage[i]}")
    return [{"at": x, "what": "; ".join(what)} for x, what in sorted(at.items())]


def _colour(systems: list[str]) -> dict:
    return {"field": "experiment", "type": "nominal", "title": "experiment", "sort": systems,
            "scale": {"domain": systems, "range": list(colours(systems).values())}}


def _epoch_axis() -> dict:
    return {"field": "epoch", "type": "quantitative", "title": "epoch",
            "axis": {"tickMinStep": 1, "format": "d"}}


def line_chart(rows: list[dict], boundaries: list[dict], systems: list[str], title: str,
               y_title: str, fmt: str) -> dict:
    """Mean per epoch with its band over seeds, points that show their values on hover, dashed
    stage boundaries; clicking a legend entry brings that experiment forward."""
    pick = {"condition": {"param": "pick", "empty": True, "value": 1}, "value": 0.12}
    band = {"condition": {"param": "pick", "empty": True, "value": 0.15}, "value": 0.02}
    y = {"field": "mean", "type": "quantitative", "title": y_title, "axis": {"format": fmt},
         "scale": {"zero": False}}
    tooltip = [{"field": "experiment"}, {"field": "epoch"},
               {"field": "mean", "format": fmt}, {"field": "lo", "title": "95% low", "format": fmt},
               {"field": "hi", "title": "95% high", "format": fmt}]
    toggles, shown = _toggles()
    return {
        "$schema": SCHEMA, "title": title, "width": 420, "height": 250,
        "params": toggles,
        "layer": [
            {"data": {"values": rows}, "transform": [shown], "mark": {"type": "area"},
             "encoding": {"x": _epoch_axis(), "y": {**y, "field": "lo"}, "y2": {"field": "hi"},
                          "color": _colour(systems), "opacity": band}},
            {"data": {"values": rows}, "transform": [shown], "mark": {"type": "line", "strokeWidth": 2},
             "params": [{"name": "pick", "select": {"type": "point", "fields": ["experiment"]}, "bind": "legend"}],
             "encoding": {"x": _epoch_axis(), "y": y, "color": _colour(systems), "opacity": pick}},
            {"data": {"values": rows}, "transform": [shown], "mark": {"type": "point", "filled": True, "size": 28},
             "encoding": {"x": _epoch_axis(), "y": y, "color": _colour(systems), "opacity": pick,
                          "tooltip": tooltip}},
            {"data": {"values": boundaries or [{"at": None, "what": None}]},
             "mark": {"type": "rule", "strokeDash": [4, 4], "strokeWidth": 1, "color": "#888"},
             "encoding": {"x": {"field": "at", "type": "quantitative"},
                          "tooltip": [{"field": "what", "title": "stage boundary"}]}},
        ],
        "resolve": {"scale": {"y": "shared"}},
    }


def class_chart(rows: list[dict], systems: list[str], classes: list[str]) -> dict:
    """E and C per class over epochs, side by side, for the experiment chosen in the menu."""
    measured = [s for s in systems if any(r["experiment"] == s and r["E"] is not None for r in rows)]
    choice = "SEL-95" if "SEL-95" in measured else (measured or systems)[0]

    def panel(field, title):
        return {"title": title, "width": 420, "height": 250, "mark": {"type": "line", "point": True},
                "encoding": {"x": _epoch_axis(),
                             "y": {"field": field, "type": "quantitative", "title": title,
                                   "scale": {"zero": False}},
                             "color": {"field": "class", "type": "nominal", "sort": classes,
                                       "scale": {"scheme": "category10"}},
                             "tooltip": [{"field": "class"}, {"field": "epoch"},
                                         {"field": field, "format": ".4f"}]}}

    return {"$schema": SCHEMA, "title": "Per-class embarrassment E and confidence C (mean over seeds)",
            "data": {"values": rows},
            "params": [{"name": "exp", "value": choice,
                        "bind": {"input": "select", "options": measured or systems, "name": "experiment "}}],
            "transform": [{"filter": "datum.experiment == exp && isValid(datum.E)"}],
            "hconcat": [panel("E", "embarrassment E"), panel("C", "confidence C")]}


def per_class_accuracy(rows: list[dict], systems: list[str], classes: list[str]) -> dict:
    last = {}
    for r in rows:
        if r["epoch"] >= last.get(r["experiment"], 0):
            last[r["experiment"]] = r["epoch"]
    final = [r for r in rows if r["epoch"] == last[r["experiment"]]]
    toggles, shown = _toggles()
    return {"$schema": SCHEMA, "title": "Per-class accuracy at the last epoch (full test set)",
            "width": 880, "height": 250, "data": {"values": final}, "params": toggles, "transform": [shown],
            "mark": "bar",
            "encoding": {"x": {"field": "class", "type": "nominal", "sort": classes, "title": None},
                         "xOffset": {"field": "experiment", "sort": systems},
                         "y": {"field": "class_acc", "type": "quantitative", "title": "accuracy",
                               "axis": {"format": ".0%"}},
                         "color": _colour(systems),
                         "tooltip": [{"field": "experiment"}, {"field": "class"},
                                     {"field": "class_acc", "format": ".1%"}]}}


def _with_interval(row: dict, field: str, stat: dict | None) -> dict:
    """`row` with `field`'s mean and 95% interval (`_lo`, `_hi`: the mean itself without one)."""
    if stat is None:
        return row
    mean = stat["mean"]
    lo, hi = (mean, mean) if stat["ci_low"] is None else (stat["ci_low"], stat["ci_high"])
    return {**row, field: mean, f"{field}_lo": lo, f"{field}_hi": hi}


# The costs final accuracy is drawn against, with its Pareto front: (field, axis title, d3 format).
# `train_s` is the training alone (`compute/train_time_s`), or training and evaluation
# (`compute/time_s`) for a run recorded before the two were apart.
COSTS = [("compute/flops_executed_T", "executed training FLOPs (T)", ".4g"),
         ("train_s", "training time (s)", ".0f")]


def scatter_rows(summary: dict, groups: dict[str, str] | None = None) -> list[dict]:
    """Per experiment: final accuracy, FLOPs saved (both measures), executed FLOPs, time and
    training time, with 95% intervals, and its page group; `front:<cost>` says whether it is on
    that cost's Pareto front."""
    out = []
    for e in summary["experiments"]:
        group = (groups or {}).get(e["experiment"]) or group_of(e["experiment"], None)
        row = {"experiment": e["system"], "group": group, "n": len(e["seeds"])}
        stats = {m: e["metrics"].get(m) for m in ("acc/test_full", "compute/saved_proxy_pct",
                                                  "compute/saved_executed_pct", "compute/time_s",
                                                  "compute/flops_executed_T")}
        stats["train_s"] = e["metrics"].get("compute/train_time_s") or stats["compute/time_s"]
        for metric, stat in stats.items():
            row = _with_interval(row, metric, stat)
        out.append(row)
    for cost, *_ in COSTS:
        front = pareto_front(out, cost)
        for row in out:
            row[f"front:{cost}"] = row["experiment"] in front
    return out


def pareto_front(rows: list[dict], cost: str) -> set[str]:
    """The experiments no other beats on both mean accuracy and mean `cost` (at least as good on
    both, better on one): the cheapest way to each accuracy the benchmark found."""
    have = [r for r in rows if r.get(cost) is not None and r.get("acc/test_full") is not None]

    def beaten(r, by):
        return (by["acc/test_full"] >= r["acc/test_full"] and by[cost] <= r[cost]
                and (by["acc/test_full"] > r["acc/test_full"] or by[cost] < r[cost]))

    return {r["experiment"] for r in have if not any(beaten(r, other) for other in have)}


ACCURACY = {"field": "acc/test_full", "type": "quantitative", "title": "full test accuracy",
            "axis": {"format": ".0%"}, "scale": {"zero": False}}


def _accuracy_points(x: dict, fmt: str, systems: list[str], more_tooltip: list[dict] = ()) -> list[dict]:
    """The layers of one experiment per point, final accuracy against `x`: both 95% intervals as
    rules, the point with its values on hover, its name beside it."""
    field, colour = x["field"], _colour(systems)
    tooltip = [{"field": "experiment"}, {"field": "n", "title": "seeds"},
               {"field": "acc/test_full", "format": ".1%"},
               {"field": field, "format": fmt, "title": x["title"]}, *more_tooltip]
    return [{"mark": {"type": "rule"}, "encoding": {"x": x, "y": {**ACCURACY, "field": "acc/test_full_lo"},
                                                    "y2": {"field": "acc/test_full_hi"}, "color": colour}},
            {"mark": {"type": "rule"}, "encoding": {"x": {**x, "field": f"{field}_lo"}, "x2": {"field": f"{field}_hi"},
                                                    "y": ACCURACY, "color": colour}},
            {"mark": {"type": "point", "filled": True, "size": 90},
             "encoding": {"x": x, "y": ACCURACY, "color": colour, "tooltip": tooltip}},
            {"mark": {"type": "text", "align": "left", "dx": 7, "dy": -7, "fontSize": 10},
             "encoding": {"x": x, "y": ACCURACY, "text": {"field": "experiment"}}}]


def accuracy_vs_saved(rows: list[dict], systems: list[str]) -> dict:
    """Final accuracy against FLOPs saved, proxy and executed: top right is best."""
    def panel(saved, title):
        x = {"field": saved, "type": "quantitative", "title": title, "scale": {"domain": [-5, 105]}}
        return {"width": 420, "height": 260, "layer": _accuracy_points(x, ".1f", systems)}

    toggles, shown = _toggles()
    return {"$schema": SCHEMA, "title": "Accuracy against FLOPs saved vs the baseline (95% intervals)",
            "data": {"values": rows}, "params": toggles, "transform": [shown],
            "hconcat": [panel("compute/saved_proxy_pct", "FLOPs saved, original's proxy (%)"),
                        panel("compute/saved_executed_pct", "FLOPs saved, executed (%)")]}


def frontier_rows(summary: dict, cost: str) -> list[dict]:
    """Per rung of each dense frontier (summary.json's "frontier"): its schedule, and its mean
    accuracy and `cost` (a COSTS field) with their 95% intervals, in the page's frontier group."""
    metric = "compute/train_time_s" if cost == "train_s" else cost
    out = []
    for schedule, rungs in summary.get("frontier", {}).get("rungs", {}).items():
        for r in rungs:
            if "acc/test_full" in r and metric in r:
                row = {"experiment": label(r["experiment"]), "schedule": schedule, "group": FRONTIER_GROUP}
                out.append(_with_interval(_with_interval(row, "acc/test_full", r["acc/test_full"]), cost, r[metric]))
    return out


def _frontier_layers(rungs: list[dict], x: dict, fmt: str) -> list[dict]:
    """The dense frontier: a line through its rungs' means (one per schedule, told apart by its
    dash), over a band of their accuracy's 95% intervals; hidden with the frontier group."""
    _, shown = _toggles()
    data, schedule = {"values": rungs}, {"field": "schedule", "type": "nominal", "title": "dense frontier"}
    tooltip = [{"field": "experiment", "title": "rung"}, {"field": "schedule"},
               {"field": "acc/test_full", "format": ".1%"},
               {"field": "acc/test_full_lo", "title": "95% low", "format": ".1%"},
               {"field": "acc/test_full_hi", "title": "95% high", "format": ".1%"},
               {"field": x["field"], "format": fmt, "title": x["title"]}]
    return [{"data": data, "transform": [shown], "mark": {"type": "area", "color": "#333", "opacity": 0.12},
             "encoding": {"x": x, "y": {**ACCURACY, "field": "acc/test_full_lo"}, "y2": {"field": "acc/test_full_hi"},
                          "detail": schedule}},
            {"data": data, "transform": [shown], "mark": {"type": "line", "color": "#333", "point": True},
             "encoding": {"x": x, "y": ACCURACY, "strokeDash": schedule, "tooltip": tooltip,
                          "order": {"field": x["field"], "type": "quantitative"}}}]


def accuracy_vs_cost(rows: list[dict], systems: list[str], cost: str, title: str, fmt: str,
                     rungs: list[dict] = ()) -> dict:
    """Final accuracy against what training spent, each with its 95% interval: the dense frontier
    (`rungs`, frontier_rows) as a line with its band, every other experiment as a point, and the
    Pareto front as a dashed line. Top left is best; a method below the frontier does worse than
    dense training given what it spent, and one off the Pareto front costs more than some other
    run that is at least as accurate."""
    x = {"field": cost, "type": "quantitative", "title": title, "axis": {"format": fmt}}
    front = sorted((r for r in rows if r[f"front:{cost}"]), key=lambda r: r[cost])
    line = {"data": {"values": front}, "mark": {"type": "line", "color": "#555", "strokeDash": [6, 3]},
            "encoding": {"x": x, "y": ACCURACY, "order": {"field": cost, "type": "quantitative"}}}
    on_frontier = {r["experiment"] for r in rungs}
    toggles, shown = _toggles()
    return {"$schema": SCHEMA, "title": f"Accuracy against {title}: dense frontier and Pareto front (95% intervals)",
            "width": 420, "height": 260, "data": {"values": [r for r in rows if r["experiment"] not in on_frontier]},
            "params": toggles, "transform": [shown],
            "layer": [*(_frontier_layers(rungs, x, fmt) if rungs else []), line,
                      *_accuracy_points(x, fmt, systems, [{"field": f"front:{cost}", "title": "on the front"}])]}


def summary_bars(rows: list[dict], systems: list[str]) -> dict:
    def panel(field, title, fmt):
        return {"width": 420, "height": 220, "layer": [
            {"mark": "bar", "encoding": {"x": {"field": "experiment", "sort": systems, "title": None,
                                               "axis": {"labelAngle": -40}},
                                         "y": {"field": field, "type": "quantitative", "title": title,
                                               "axis": {"format": fmt}},
                                         "color": _colour(systems),
                                         "tooltip": [{"field": "experiment"},
                                                     {"field": field, "format": fmt, "title": title}]}},
            {"mark": "rule", "encoding": {"x": {"field": "experiment", "sort": systems},
                                          "y": {"field": f"{field}_lo", "type": "quantitative"},
                                          "y2": {"field": f"{field}_hi"}}}]}

    toggles, shown = _toggles()
    return {"$schema": SCHEMA, "title": "Summary: final accuracy and training time (95% intervals)",
            "data": {"values": rows}, "params": toggles, "transform": [shown],
            "hconcat": [panel("acc/test_full", "full test accuracy", ".0%"),
                        panel("compute/time_s", "training time (s)", ".0f")]}


def time_to_accuracy_chart(summary: dict, systems: list[str], groups: dict[str, str]) -> dict:
    """Time to accuracy as a matrix, experiment by target (fractions of the baseline's final
    validation accuracy, then absolute accuracies): each cell the executed training FLOPs spent
    to reach the target, as a multiple of the baseline's (its colour) and in TFLOPs (its text),
    or how many seeds got there when not every one did."""
    rows = summary.get("time_to_accuracy", [])
    base = {target_label(r): r["compute/flops_executed_T"] for r in rows if r["experiment"] == "baseline"}
    targets = list(dict.fromkeys(target_label(r) for r in rows))  # fractions of the baseline's, then absolute
    cells = []
    for r in rows:
        spent, ref = r["compute/flops_executed_T"], base.get(target_label(r))
        cells.append({"experiment": label(r["experiment"]), "group": groups.get(r["experiment"], "control"),
                      "target": target_label(r),
                      "ratio": spent["mean"] / ref["mean"] if spent and ref else None,
                      "text": f"{spent['mean']:.3g} T" if spent else f"{len(r['reached'])}/{len(r['seeds'])} seeds"})
    toggles, shown = _toggles()
    y = {"field": "experiment", "type": "nominal", "sort": systems, "title": None}
    x = {"field": "target", "type": "ordinal", "sort": targets,
         "title": "validation accuracy reached: a share of the baseline's final, or absolute (val)"}
    return {"$schema": SCHEMA, "title": "Time to accuracy: executed FLOPs to first reach each target",
            "data": {"values": cells}, "params": toggles, "transform": [shown], "width": 420,
            "layer": [{"mark": "rect", "encoding": {
                           "x": x, "y": y, "tooltip": [{"field": "experiment"}, {"field": "target"},
                                                       {"field": "text", "title": "spent"},
                                                       {"field": "ratio", "title": "x baseline's", "format": ".2f"}],
                           "color": {"field": "ratio", "type": "quantitative", "title": "x baseline's FLOPs",
                                     "scale": {"scheme": "redyellowgreen", "reverse": True, "domainMid": 1}}}},
                      {"mark": {"type": "text", "fontSize": 10}, "encoding": {"x": x, "y": y, "text": {"field": "text"}}}]}


def charts(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]], summary: dict, classes: list[str],
           groups: dict[str, str] | None = None) -> list[dict]:
    """Every chart of the page, as Vega-Lite specs, in reading order. `groups`: each experiment's
    page group (`group_of`), which the page's checkboxes show or hide."""
    groups = {name: (groups or {}).get(name) or group_of(name, None) for name in curves}
    systems = [label(name) for name in curves]
    lines = line_rows(curves, groups)
    boundaries = stage_boundaries(curves)
    per_class = [{**r, "group": groups[name]} for name in curves
                 for r in _records(class_rows({name: curves[name]}, classes))]
    scatter = scatter_rows(summary, groups)
    out = [line_chart(_records(lines[lines["metric"] == col]), boundaries, systems, title, y_title, fmt)
           for col, title, y_title, fmt in LINES]
    out.insert(4, class_chart(per_class, systems, classes))
    out += [per_class_accuracy(per_class, systems, classes), accuracy_vs_saved(scatter, systems),
            *(accuracy_vs_cost(scatter, systems, *cost, frontier_rows(summary, cost[0])) for cost in COSTS),
            summary_bars(scatter, systems)]
    if summary.get("time_to_accuracy"):
        out.append(time_to_accuracy_chart(summary, systems, groups))
    return out


def _script_json(value) -> str:
    """JSON the HTML parser reads as plain text inside its <script>: `</script>` in a name would
    end the element there, and `<!--<script>` would make the parser skip the element's own end
    tag (the page then drew no chart). Every `<`, `>` and `&` is written as a JavaScript escape,
    the same string to the script, so no name can do either."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _table(markdown: str, heading: str | None = None) -> str:
    """The first table of summary.md as HTML, or the first under `heading` ("" if it has none):
    the page shows summary.md's own tables rather than a second rendering of the same numbers."""
    lines = markdown.splitlines()
    if heading is not None:
        lines = lines[lines.index(heading) + 1:] if heading in lines else []
    rows = [line.strip().strip("|").split("|") for line in lines if line.startswith("|")]
    if not rows:
        return ""
    head, body = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]
    end = next((i for i, r in enumerate(body) if len(r) != len(head)), len(body))
    def row(cells, tag):
        return "<tr>" + "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in cells) + "</tr>"

    return "<table>" + row(head, "th") + "".join(row(r, "td") for r in body[:end]) + "</table>"


def _time_to_accuracy(markdown: str) -> str:
    """summary.md's time-to-accuracy table under a heading of its own, if the summary has one."""
    table = _table(markdown, TO_ACCURACY_HEADING)
    return table and (f"<h2>{TO_ACCURACY_HEADING.lstrip('# ')}</h2>\n"
                      f'<p class="caption">{html.escape(TO_ACCURACY_NOTE)}</p>\n{table}')


def _partial(summary: dict) -> str:
    """summary.md's partial line, in HTML, on a line of its own; "" for a summary of every listed run."""
    gap = partial(summary)
    if gap is None:
        return ""
    return (f'\n<p class="partial"><strong>{html.escape(gap[0])}</strong> ({html.escape(gap[1])}: '
            "<code>dvc repro</code> trains them)</p>")


def write_results_page(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]], summary: dict,
                       classes: list[str], caption: str, markdown: str, path: Path,
                       groups: dict[str, str] | None = None) -> None:
    specs = charts(curves, summary, classes, groups)
    boxes = " ".join(f'<label><input type="checkbox" checked data-signal="{_signal(g)}"> {html.escape(g)}s</label>'
                     for g in GROUPS)
    scripts = "\n".join(f"<script>{(VENDOR / name).read_text()}</script>" for name in SCRIPTS)
    divs = "\n".join(f'<div class="chart" id="chart{i}"></div>' for i in range(len(specs)))
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sel-bench results</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
p.caption {{ max-width: 70em; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1.5em; }}
#errors {{ color: #b00; }}
</style>
{scripts}
</head>
<body>
<h1>SEL benchmark: results</h1>{_partial(summary)}
<p class="caption">{html.escape(caption)}</p>
<p class="caption">Lines: mean over seeds; bands and bars: 95% confidence intervals (Student t).
Dashed rules: stage boundaries. Hover a point for its values; click a legend entry to bring one
experiment forward (shift-click for several).</p>
{_table(markdown)}
{_time_to_accuracy(markdown)}
<p class="groups">Show: {boxes}</p>
<pre id="errors"></pre>
<div class="charts">
{divs}
</div>
<script>
const specs = {_script_json(specs)};
const shown = [];
specs.forEach((spec, i) => shown.push(
  vegaEmbed("#chart" + i, spec, {{renderer: "svg", actions: false}})
    .then(result => result.view)
    .catch(e => {{ document.getElementById("errors").textContent += "chart " + i + ": " + e + "\\n"; }})));
Promise.all(shown).then(views => {{
  document.body.setAttribute("data-charts-done", specs.length);
  // each group's checkbox shows or hides its experiments in every chart at once
  document.querySelectorAll("input[data-signal]").forEach(box => box.addEventListener("change", () =>
    views.forEach(view => {{
      try {{ view.signal(box.dataset.signal, box.checked).runAsync(); }} catch (e) {{}}  // a chart without groups
    }})));
}});
</script>
</body>
</html>
"""
    path.write_text(page)
