"""The dense frontier (issue 28): the plain dense runs of a schedule at a ladder of budgets, each
other experiment's accuracy against it at equal executed FLOPs and at equal training time, paired
by seed, with a verdict; in summary.json, summary.md and the results page's cost charts."""

import json

import pytest

from browser import drawn_charts, rendered_dom
from builders import CLASSES
from sel.config.params import Experiment
from sel.report.frontier import against, along, frontier_rungs, verdict
from sel.report.results_page import charts, group_of, write_results_page
from sel.report.stats import describe
from sel.report.summary import markdown, summarise
from test_results_page import fixture

FLOPS, TIME, ACC = "compute/flops_executed_T", "compute/train_time_s", "acc/test_full"


def run(acc, flops, seconds):
    return {ACC: acc, FLOPS: flops, TIME: seconds, "acc/test_100": acc}


def test_the_rungs_are_the_plain_dense_runs_of_each_schedule_with_two_or_more():
    specs = {"baseline": Experiment(lr_schedule="linear"), "dense_30": Experiment(lr_schedule="linear", budget=0.3),
             "dense_at_x": Experiment(lr_schedule="linear", budget="x"),
             "proxy_50": Experiment(lr_schedule="linear", proxy_keep=0.5),
             "selective": Experiment(lr_schedule="linear", selective_keep=0.5),
             "masked": Experiment(lr_schedule="linear", mask=True),
             "scaled": Experiment(lr_schedule="linear", loss_scaled_lr=True),
             "sel95": Experiment(recipe="curriculum", lr_schedule="linear"),
             "constant": Experiment(), "constant_half": Experiment(budget=0.5), "lone": Experiment(recipe="lottery")}
    assert frontier_rungs(specs) == {"linear": {"baseline": None, "dense_30": 0.3},
                                     "constant": {"constant": None, "constant_half": 0.5}}
    assert frontier_rungs({k: specs[k] for k in ("baseline", "constant", "sel95")}) == {}  # one rung is no line
    assert group_of("dense_30", specs["dense_30"], {"dense_30"}) == "dense frontier"
    assert group_of("proxy_50", specs["proxy_50"]) == "method"
    assert group_of("baseline", specs["baseline"], {"baseline"}) == "original"


def test_the_frontier_is_read_by_flops_between_the_seeds_own_rungs_and_never_beyond():
    """Rungs at 1, 2 and 10 TFLOPs: at 6 the line gives 0.8 (by rung index, 2/3 of the way to
    the dearest, it would not); beyond 10 there is no value (extrapolated, 0.925). Seed 2's rungs
    swap their order of FLOPs: each seed's rungs are sorted by their own."""
    assert along([(10, 0.9), (1, 0.5), (2, 0.7)], 6) == pytest.approx(0.8)
    assert along([(10, 0.9), (1, 0.5), (2, 0.7)], 1) == pytest.approx(0.5)
    assert along([(10, 0.9), (1, 0.5), (2, 0.7)], 12) is None and along([(10, 0.9), (1, 0.5)], 0.5) is None
    values = {"full": {FLOPS: {1: 10, 2: 10}, ACC: {1: 0.9, 2: 0.9}},
              "small": {FLOPS: {1: 1, 2: 3}, ACC: {1: 0.5, 2: 0.5}},
              "mid": {FLOPS: {1: 2, 2: 2}, ACC: {1: 0.7, 2: 0.7}},
              "method": {FLOPS: {1: 6, 2: 2.5}, ACC: {1: 0.85, 2: 0.7}}}
    out = against(values, "method", ["full", "small", "mid"], FLOPS)
    # seed 1: 0.85 - 0.8; seed 2: between mid (2, 0.7) and small (3, 0.5): 0.6, so 0.7 - 0.6
    assert out["difference"]["mean"] == pytest.approx((0.05 + 0.1) / 2) and out["outside"] == []
    values["method"][FLOPS][2] = 11
    out = against(values, "method", ["full", "small", "mid"], FLOPS)
    assert out["outside"] == [2] and out["difference"]["seeds"] == [1] and out["difference"]["mean"] == \
        pytest.approx(0.05)


def test_a_seed_missing_from_either_side_is_left_out_not_called_outside():
    values = {"full": {FLOPS: {1: 10, 3: 10}, ACC: {1: 0.9, 3: 0.8}},
              "small": {FLOPS: {1: 2, 3: 2}, ACC: {1: 0.5, 3: 0.4}},
              "method": {FLOPS: {1: 6, 2: 6, 3: 6, 4: 6}, ACC: {1: 0.75, 2: 0.1, 3: 0.5}}}
    out = against(values, "method", ["full", "small"], FLOPS)
    assert out["difference"]["seeds"] == [1, 3] and out["outside"] == []
    assert out["difference"]["mean"] == pytest.approx((0.05 - 0.1) / 2)  # seed 2's 0.1 has no frontier


@pytest.mark.parametrize("diffs, words", [([0.02, 0.03, 0.025], "saves"),
                                          ([-0.01, 0.03, 0.0], "not detectably different"),
                                          ([-0.03, -0.02, -0.025], "below the frontier")])
def test_the_verdict_follows_where_the_interval_lies(diffs, words):
    assert verdict({"difference": describe(diffs), "outside": []}) == words


def test_no_verdict_beyond_the_ladder():
    assert verdict({"difference": None, "outside": [1, 2]}) == "outside the ladder"


def ladder_summary():
    """A linear ladder (baseline, dense_30, dense_60) over seeds 1-3 and three others: `saver`,
    above the line at its FLOPs but below it at its (slow) time; `beyond`, dearer than the
    baseline; `constant_run`, on a schedule with no ladder of its own."""
    def seeds(acc, flops, seconds, step=(0.0, 0.005, -0.004)):
        return {s: run(acc + d, flops + 10 * d, seconds) for s, d in zip((1, 2, 3), step)}

    summaries = {"baseline": seeds(0.90, 10, 100), "dense_30": seeds(0.80, 3, 30), "dense_60": seeds(0.86, 6, 60),
                 "saver": seeds(0.88, 4.5, 95, (0.0, 0.002, 0.001)), "beyond": seeds(0.91, 12, 120),
                 "constant_run": seeds(0.70, 4.5, 45, (0.0, 0.003, -0.003))}
    schedules = {**{name: "linear" for name in summaries}, "constant_run": "constant"}
    ladders = {"linear": {"baseline": None, "dense_30": 0.3, "dense_60": 0.6}}
    return summarise(summaries, {}, schedules=schedules, ladders=ladders)


def test_summary_json_holds_the_rungs_and_each_experiments_differences():
    front = ladder_summary()["frontier"]
    assert [r["experiment"] for r in front["rungs"]["linear"]] == ["dense_30", "dense_60", "baseline"]
    rung = front["rungs"]["linear"][0]
    assert rung["budget"] == 0.3 and rung[ACC]["mean"] == pytest.approx(0.80 + 0.001 / 3)
    assert rung[FLOPS]["ci_low"] < rung[FLOPS]["mean"] < rung[FLOPS]["ci_high"] and rung[TIME]["mean"] == 30
    rows = {r["experiment"]: r for r in front["comparisons"]}
    assert set(rows) == {"saver", "beyond", "constant_run"}
    saver = rows["saver"]
    assert saver["flops_pct"] == pytest.approx(100 * (4.5 + 10 * 0.001) / (10 + 10 * 0.001 / 3))
    assert saver[FLOPS]["difference"]["ci_low"] > 0 and saver[TIME]["difference"]["ci_high"] < 0
    assert saver["verdict"] == "saves"  # at equal FLOPs, whatever its time says
    assert rows["beyond"][FLOPS] == {"difference": None, "outside": [1, 2, 3]}
    assert rows["beyond"]["verdict"] == "outside the ladder"
    assert rows["constant_run"]["schedules"] == ["constant", "linear"] and rows["constant_run"]["verdict"] == \
        "below the frontier"
    json.dumps(front)  # summary.json takes it as it is


def test_summary_md_has_the_frontier_section():
    text = markdown(ladder_summary(), "note")
    section = text[text.index("## Against the dense frontier"):]
    assert "| linear | dense_30 | 30% | 80.0 ± " in section and "| linear | Baseline | 100% | 90.0 ± " in section
    assert "| saver | linear | 45% | +" in section and section.count("| saves |") == 1
    assert "| beyond | linear | 120% | outside the ladder | outside the ladder | outside the ladder |" in section
    assert "| constant_run ‡ | linear |" in section and "compares schedules as well as methods" in section
    assert "4 comparisons with an interval" in section and "Each 95% interval holds for its own comparison" \
        in section
    no_ladder = summarise({"baseline": {1: run(0.9, 10, 100)}}, {}, schedules={"baseline": "linear"}, ladders={})
    assert "## Against the dense frontier\n\nNot computed" in markdown(no_ladder, "note")
    assert "dense frontier" not in markdown(summarise({"baseline": {1: run(0.9, 10, 100)}}, {}), "note")


GROUPS = {"baseline": "original", "dense_30": "dense frontier", "dense_60": "dense frontier", "saver": "method"}


def test_the_cost_charts_draw_the_frontier_as_a_line_with_a_band_and_the_rest_as_points():
    curves, _ = fixture({name: [0] * 3 for name in GROUPS})
    summary = ladder_summary()
    specs = [s for s in charts(curves, summary, list(CLASSES), GROUPS) if "dense frontier" in s["title"]]
    assert len(specs) == 2
    for spec, cost in zip(specs, (FLOPS, "train_s")):
        band, line = spec["layer"][:2]
        assert band["mark"]["type"] == "area" and line["mark"]["type"] == "line"
        assert band["encoding"]["y"]["field"] == "acc/test_full_lo" and band["encoding"]["y2"]["field"] == \
            "acc/test_full_hi"
        rungs = line["data"]["values"]
        assert [r["experiment"] for r in rungs] == ["dense_30", "dense_60", "Baseline"]
        assert {r["group"] for r in rungs} == {"dense frontier"} and "datum.group" in json.dumps(line["transform"])
        assert rungs[0][cost] == pytest.approx(3.003 if cost == FLOPS else 30, abs=1e-3)
        assert rungs[0]["acc/test_full_lo"] < rungs[0][ACC] < rungs[0]["acc/test_full_hi"]
        assert {r["experiment"] for r in spec["data"]["values"]} == {"saver", "beyond", "constant_run"}


def test_the_frontier_draws_in_a_browser(tmp_path):
    """Both cost charts draw the band and the line (a layer Vega cannot draw leaves the chart out
    or blank), with its legend, and the page has the frontier group's checkbox."""
    curves, _ = fixture({name: [0] * 3 for name in GROUPS})
    summary = ladder_summary()
    page = tmp_path / "results.html"
    write_results_page(curves, summary, list(CLASSES), "caption", markdown(summary, "note"), page, GROUPS)
    dom = rendered_dom(page)
    assert 'id="errors"></pre>' in dom and 'data-signal="show_dense_frontier"' in dom
    drawn = [svg for svg in drawn_charts(dom) if "dense frontier and Pareto front" in svg]
    assert len(drawn) == 2
    for svg in drawn:
        assert 'class="mark-area' in svg and 'class="mark-line' in svg and ">dense frontier</text>" in svg
