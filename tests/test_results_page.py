"""The aggregate's views of a run: the results page drawn in a real browser, offline; the
summary figure in both formats; the long tables behind `dvc plots`."""

import json
import re

import numpy as np
import pandas as pd

from browser import drawn_charts, rendered_dom
from builders import CLASSES
from sel.report.summary import long_curves, markdown, mean_curves, summarise
from sel.report.results_page import (charts, class_rows, pareto_front, scatter_rows, stage_boundaries,
                                     write_results_page)
from sel.report.summary_figure import summary_figure

RUNS = {"baseline": [0] * 3, "warmup_sel": [0, 1, 1, 2]}  # each run's stage per epoch


def history(stages: list[int], seed: int, classes=CLASSES) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(stages)
    row = {"epoch": np.arange(1, n + 1), "schedule/stage": stages, "acc/train_acc": rng.uniform(0.2, 0.6, n),
           "acc/test_full": rng.uniform(0.2, 0.5, n), "acc/test_100": rng.uniform(0.2, 0.5, n),
           "sparsity/sparsity": rng.uniform(0, 1, n), "sparsity/params_changed": rng.uniform(0, 1, n),
           "sparsity/gamma": rng.uniform(0, 1e-3, n),
           "compute/flops_proxy_T": np.cumsum(rng.uniform(0, 1, n)),
           "compute/flops_executed_T": np.cumsum(rng.uniform(1, 2, n)),
           "compute/time_s": np.cumsum(rng.uniform(1, 2, n)), "compute/train_time_s": np.cumsum(rng.uniform(0, 1, n))}
    for c in classes:
        measured = np.array(stages) > 0 if stages[-1] else np.ones(n, bool)  # warm-up: E = C = 0
        row[f"class_acc/{c}"] = rng.uniform(0, 1, n)
        row[f"E/{c}"] = np.where(measured, rng.uniform(1, 2, n), 0.0)
        row[f"C/{c}"] = np.where(measured, rng.uniform(0, 0.2, n), 0.0)
    return pd.DataFrame(row)


def fixture(runs=RUNS, classes=CLASSES):
    histories = {name: {seed: history(stages, seed, classes) for seed in (1, 2)} for name, stages in runs.items()}
    final = ("acc/test_full", "acc/test_100", "compute/flops_proxy_T", "compute/time_s",
             "compute/flops_executed_T")
    summaries = {name: {seed: {k: h[k].iloc[-1] for k in final}
                        for seed, h in by_seed.items()} for name, by_seed in histories.items()}
    curves = {name: mean_curves(by_seed) for name, by_seed in histories.items()}
    validations = {name: {seed: validation_curve(h) for seed, h in by_seed.items()} for name, by_seed in histories.items()}
    return curves, summarise(summaries, {}, validations)


def validation_curve(h: pd.DataFrame) -> pd.DataFrame:
    """validation.csv of a run with that history: step 0, then each epoch's end."""
    start = pd.DataFrame({"epoch": [0], "compute/flops_executed_T": [0.0], "compute/train_time_s": [0.0],
                          "acc/val": [0.1]})
    ends = h[["epoch", "compute/flops_executed_T", "compute/train_time_s"]].assign(acc_val=h["acc/test_full"])
    return pd.concat([start, ends.rename(columns={"acc_val": "acc/val"})], ignore_index=True).assign(
        step=lambda c: c["epoch"] * 10)


def every_chart_drawn(curves, summary, classes, page) -> str:
    """The page's DOM, once every chart has drawn, each with marks (not an empty frame)."""
    dom = rendered_dom(page)
    assert 'id="errors"></pre>' in dom, dom[dom.find('id="errors"'):][:500]
    n = len(charts(curves, summary, classes))
    assert f'data-charts-done="{n}"' in dom
    drawn = drawn_charts(dom)
    assert len(drawn) == n, f"{len(drawn)} charts of {n}"
    for svg in drawn:
        assert len(set(re.findall(r' d="M[^"]{12,}"', svg))) >= 3, svg[:300]  # a matrix's cells are short
    return dom


def test_results_page_draws_every_chart_offline(tmp_path):
    curves, summary = fixture()
    page = tmp_path / "results.html"
    write_results_page(curves, summary, list(CLASSES), "protocol line", "| a | b |\n|---|---|\n| 1 | 2 |\n", page)
    dom = every_chart_drawn(curves, summary, list(CLASSES), page)
    assert "Warmup+SEL" in dom and "protocol line" in dom and "<td>1</td>" in dom


def test_the_pareto_fronts_draw_and_the_time_to_accuracy_table_shows(tmp_path):
    """Accuracy against executed FLOPs and against training time, each with its front as a
    dashed line (a chart that failed to draw, or drew no front, would show nothing here), and
    summary.md's time-to-accuracy table under its heading."""
    curves, summary = fixture()
    page = tmp_path / "results.html"
    write_results_page(curves, summary, list(CLASSES), "caption", markdown(summary, "note"), page)
    dom = every_chart_drawn(curves, summary, list(CLASSES), page)
    fronts = [svg for svg in drawn_charts(dom) if "Pareto front" in svg]
    assert len(fronts) == 2 and all('stroke-dasharray="6,3"' in svg for svg in fronts)
    assert "executed training FLOPs (T)" in fronts[0] and "training time (s)" in fronts[1]
    section = dom[dom.index("<h2>Time to accuracy</h2>"):]
    assert "<th>Executed FLOPs (T)</th>" in section and "<td>Warmup+SEL</td><td>90%" in section


def test_the_front_is_what_no_other_run_beats_on_both_and_training_time_falls_back():
    rows = [{"experiment": name, "acc/test_full": acc, "cost": cost}
            for name, acc, cost in [("cheap", 0.5, 1), ("good", 0.9, 5), ("beaten", 0.8, 6),
                                    ("tie", 0.9, 5.5), ("cheapest", 0.4, 0.5), ("none", 0.95, None)]]
    assert pareto_front(rows, "cost") == {"cheap", "good", "cheapest"}
    _, summary = fixture()  # its summaries lack compute/train_time_s: training time is time_s
    for row, e in zip(scatter_rows(summary), summary["experiments"]):
        assert row["train_s"] == e["metrics"]["compute/time_s"]["mean"]
    summary["experiments"][0]["metrics"]["compute/train_time_s"] = {"mean": 7.0, "ci_low": 6.0, "ci_high": 8.0}
    assert scatter_rows(summary)[0]["train_s"] == 7.0


def test_names_that_read_as_html_draw_like_any_other(tmp_path):
    """The page inlines its data in a <script>: `</script>` would end it there, and `<!--<script`
    would keep the parser from ending it at all (1 chart of 14 drew, before the Pareto fronts).
    sel.config.names keeps such names out of a run; the page must not depend on that (an old
    run, a hand-written history)."""
    odd = ["<!--<script>", "</script><!--<script a"]
    classes = CLASSES[:8] + odd
    curves, summary = fixture({odd[0]: [0] * 3, odd[1]: [0, 1, 1, 2]}, classes)
    page = tmp_path / "results.html"
    write_results_page(curves, summary, classes, "caption <!--<script", "| a |\n|---|\n| </script> |\n", page)
    dom = every_chart_drawn(curves, summary, classes, page)
    assert "&lt;!--&lt;script&gt;</text>" in dom  # a legend shows the name as it is


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_every_field_a_chart_draws_is_in_its_data():
    """A renamed column must not leave a chart drawing a field its data lacks (Vega draws
    nothing for it, silently: an error bar, a tooltip value)."""
    curves, summary = fixture()
    for spec in charts(curves, summary, list(CLASSES)):
        have = {"value"}  # fields that transforms make
        for node in _walk(spec):
            if isinstance(node.get("values"), list):
                have |= {k for row in node["values"] for k in row}
            for key in ("as", "groupby"):
                made = node.get(key)
                have |= set(made) if isinstance(made, list) else {made} if isinstance(made, str) else set()
        drawn = {node["field"] for node in _walk(spec) if isinstance(node.get("field"), str)}
        assert drawn <= have, (spec.get("title"), drawn - have)


def test_warm_up_epochs_have_no_e_or_c_and_stage_boundaries_are_marked_once():
    curves, _ = fixture()
    rows = class_rows(curves, list(CLASSES))
    warm = rows[(rows.experiment == "Warmup+SEL") & (rows.epoch == 1)]
    assert warm.E.isna().all() and warm.C.isna().all() and warm.class_acc.notna().all()
    assert rows[rows.experiment == "Baseline"].E.notna().all()
    assert [b["at"] for b in stage_boundaries(curves)] == [1.5, 3.5]
    lines = long_curves(curves)
    assert list(lines.columns[:2]) == ["epoch", "experiment"]
    assert sorted(set(lines.experiment)) == ["Baseline", "Warmup+SEL"] and len(lines) == 7


def test_summary_figure_in_raster_and_vector_with_its_caption(tmp_path):
    curves, summary = fixture()
    png, svg = tmp_path / "s.png", tmp_path / "s.svg"
    summary_figure(curves, summary, "seeds 1, 2; epochs recorded: baseline 3", png, svg)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text


def test_every_view_gives_an_experiment_the_same_colour(tmp_path):
    from conftest import ROOT
    from sel.config.names import label
    from sel.report.summary import COLOURS, colours

    template = json.loads((ROOT / ".dvc" / "plots" / "experiments.json").read_text())
    scale = next(n for n in _walk(template) if n.get("field") == "experiment" and "scale" in n)["scale"]
    assert dict(zip(scale["domain"], scale["range"])) == {label(n): c for n, c in COLOURS.items()}
    curves, summary = fixture()
    page = [n for spec in charts(curves, summary, list(CLASSES)) for n in _walk(spec)
            if n.get("field") == "experiment" and "scale" in n]
    assert page and all(dict(zip(n["scale"]["domain"], n["scale"]["range"])) ==
                        {label(k): v for k, v in colours(list(curves)).items()} for n in page)
    assert colours(["baseline", "mine", "yours"]) == {"baseline": COLOURS["baseline"], "mine": "#393b79",
                                                       "yours": "#ad494a"}


def test_each_group_of_experiments_can_be_hidden_in_every_chart_at_once(tmp_path):
    """A checkbox per group (the original's four, controls, methods, dense twins, the dense
    frontier's rungs) sets one signal
    in every chart, and every chart that draws experiments filters its marks by it; the time to
    accuracy is a matrix of experiments by targets rather than a table of every pair."""
    curves, summary = fixture()
    groups = {"baseline": "original", "warmup_sel": "control"}
    specs = charts(curves, summary, list(CLASSES), groups)
    signals = {f"show_{g.replace(' ', '_')}" for g in ("original", "control", "method", "dense twin", "dense frontier")}
    grouped = [s for s in specs if "E and confidence C" not in s["title"]]
    for spec in grouped:
        assert signals <= {p["name"] for p in spec["params"]}, spec["title"]
        assert "datum.group" in json.dumps(spec), spec["title"]
    matrix = specs[-1]
    assert matrix["title"].startswith("Time to accuracy") and {c["group"] for c in matrix["data"]["values"]} == \
        {"original", "control"}
    page = tmp_path / "results.html"
    write_results_page(curves, summary, list(CLASSES), "caption", "| a |\n|---|\n| 1 |\n", page, groups)
    text = page.read_text()
    assert all(f'data-signal="{s}"' in text for s in signals)


def test_the_default_experiments_fall_in_their_groups():
    from sel.config.params import Params
    from sel.report.results_page import group_of

    groups = {name: group_of(name, spec) for name, spec in Params().experiments.items()}
    assert groups["baseline"] == groups["sel95"] == "original"
    assert groups["selective_50"] == groups["infobatch_r50"] == groups["class_draw_25"] == "method"
    assert groups["dense_at_infobatch_r50"] == groups["dense_at_sel95"] == "dense twin"
    assert groups["sel_random_order"] == groups["baseline_linear"] == "control"
