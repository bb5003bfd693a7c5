"""A partial aggregate: a protocol longer than a session trains in pieces, and the aggregate run
alone between them (`dvc repro --single-item aggregate`) reports the runs that exist, leaves an
experiment with none out of every table and chart, and says at the top which runs are missing;
with every run there, nothing of this shows."""

import json
import re
import shutil

import pytest
import yaml
from mlflow import MlflowClient

from browser import drawn_charts, rendered_dom
from pipeline.aggregate import main
from sel.report.summary import markdown, partial, summarise
from test_results_page import history, validation_curve

SEEDS = [1, 2, 3]
EXPERIMENTS = {"baseline": {}, "dense_half": {"recipe": "dense", "budget": 0.5},
               "dense_quarter": {"recipe": "dense", "budget": 0.25}, "lottery": {},
               "selective_50": {"recipe": "dense", "selective_keep": 0.5}, "sel95": {}}
# the seeds each experiment has trained: one short of a seed, one with a single seed, a rung of the
# dense frontier and a method with none
TRAINED = {"baseline": SEEDS, "dense_half": SEEDS, "dense_quarter": [], "lottery": [2], "selective_50": [1, 2],
           "sel95": []}
COMPLETE = ["baseline", "dense_half"]
OUTPUTS = ["summary.json", "summary.md", "summary.png", "summary.svg", "results.html", "headline.json",
           "plots/experiments.csv", "plots/classes.csv"]


def write_run(root, name: str, seed: int) -> None:
    """metrics/runs/<name>/seed<seed>/ as a training stage leaves it, from a made-up history."""
    h = history([0] * (3 if name == "baseline" else 2), 10 * list(EXPERIMENTS).index(name) + seed)
    folder = root / "metrics" / "runs" / name / f"seed{seed}"
    folder.mkdir(parents=True)
    h.to_csv(folder / "history.csv", index=False)
    validation_curve(h).to_csv(folder / "validation.csv", index=False)
    final = {k: float(h[k].iloc[-1]) for k in h.columns if k.startswith(("acc/", "compute/", "sparsity/"))}
    (folder / "summary.json").write_text(json.dumps({
        **final, "data_variant": "tiny", "model_width": 8, "pretrained": False, "device": "cpu",
        "precision": "fp32", "epochs": len(h), "beside": []}))


def aggregate(root, names, trained, store, monkeypatch) -> dict:
    """The aggregate in project folder `root` over experiments `names` (seeds SEEDS), with the runs
    `trained` ({experiment: seeds}) in metrics/runs: {output: its text} (the images' bytes)."""
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump({
        "seeds": SEEDS, "experiments": {n: EXPERIMENTS[n] for n in names},
        "train_stages": {"dense": [n for n in names if n != "sel95"], "sel": [n for n in names if n == "sel95"],
                         "budget": [], "measured": []},
        "attribution": {k: v for k, v in {"fewer": ["sel95", "baseline"], "half": ["dense_half", "baseline"],
                                          "pruned": ["lottery", "baseline"]}.items() if set(v) <= set(names)},
        "report": {"targets": [0.3]}}))
    for name, seeds in trained.items():
        for seed in seeds:
            write_run(root, name, seed)
    shutil.copy(store, root / "mlflow.db")
    monkeypatch.chdir(root)
    main()
    out = root / "metrics"
    return {f: (out / f).read_bytes() if f.endswith(".png") else (out / f).read_text() for f in OUTPUTS} | \
        {f"curves/{p.stem}": p.read_text() for p in (out / "curves").glob("*.csv")}


@pytest.fixture(autouse=True)
def _own_store(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)


def test_a_partial_aggregate_reports_what_exists_and_names_what_is_missing(tmp_path, monkeypatch, migrated_store):
    out = aggregate(tmp_path / "partial", list(EXPERIMENTS), TRAINED, migrated_store, monkeypatch)
    line = ("**Partial: 9 of 18 runs** (missing: dense_quarter@1, dense_quarter@2, dense_quarter@3, lottery@1, "
            "lottery@3, selective_50@3, sel95@1, sel95@2, sel95@3: `dvc repro` trains them)")
    assert out["summary.md"].startswith(f"# SEL benchmark\n\n{line}\n\n")
    summary = json.loads(out["summary.json"])
    assert summary["missing"] == [["dense_quarter", 1], ["dense_quarter", 2], ["dense_quarter", 3], ["lottery", 1],
                                  ["lottery", 3], ["selective_50", 3], ["sel95", 1], ["sel95", 2], ["sel95", 3]]
    assert "<strong>Partial: 9 of 18 runs</strong> (missing: dense_quarter@1" in out["results.html"]
    # an experiment with no run is in no table, chart, curve or headline, only in the partial line
    assert sorted(json.loads(out["headline.json"])) == ["baseline", "dense_half", "lottery", "selective_50"]
    assert [e["experiment"] for e in summary["experiments"]] == ["baseline", "dense_half", "lottery", "selective_50"]
    assert "curves/sel95" not in out and "SEL-95" not in out["plots/experiments.csv"]
    assert "dense_quarter" not in out["summary.md"].replace(line, "")  # the frontier: the rungs that ran
    assert "SEL-95" not in out["summary.md"].split("The original's published table")[0]
    assert [r["factor"] for r in summary["attribution"]] == ["half", "pruned"]
    # statistics over the seeds each has; one seed in common: the value, no interval, no verdict
    by_name = {e["experiment"]: e for e in summary["experiments"]}
    assert by_name["selective_50"]["seeds"] == [1, 2] and by_name["lottery"]["seeds"] == [2]
    assert by_name["lottery"]["vs_baseline"]["acc/test_full"]["seeds"] == [2]
    assert by_name["lottery"]["vs_baseline"]["acc/test_full"]["ci_low"] is None
    lottery = next(r for r in summary["frontier"]["comparisons"] if r["experiment"] == "lottery")
    assert lottery["verdict"] in ("no interval (one seed)", "outside the ladder")
    assert not any("nan" in text.lower() for name, text in out.items() if name.endswith((".md", ".json")))
    dom = rendered_dom(tmp_path / "partial" / "metrics" / "results.html")  # every chart draws what exists
    assert 'id="errors"></pre>' in dom
    assert len(drawn_charts(dom)) == int(re.search(r'data-charts-done="(\d+)"', dom)[1]) > 10
    client = MlflowClient(f"sqlite:///{tmp_path / 'partial' / 'mlflow.db'}")
    (agg,) = client.search_runs([client.get_experiment_by_name("sel-benchmark-aggregate").experiment_id])
    assert agg.data.tags["partial"] == "Partial: 9 of 18 runs" and "test_full/lottery.mean" in agg.data.metrics
    assert not any("sel95" in k for k in agg.data.metrics)

    # the complete experiments' numbers are those of a report over just their runs
    alone = aggregate(tmp_path / "alone", COMPLETE, {n: SEEDS for n in COMPLETE}, migrated_store, monkeypatch)
    just = json.loads(alone["summary.json"])
    assert "missing" not in just and "Partial" not in alone["summary.md"] + alone["results.html"]
    assert summary["experiments"][:2] == just["experiments"]
    assert summary["frontier"]["rungs"] == just["frontier"]["rungs"]
    assert [r for r in summary["time_to_accuracy"] if r["experiment"] in COMPLETE] == just["time_to_accuracy"]
    assert [r for r in summary["attribution"] if r["factor"] == "half"] == just["attribution"]
    head = json.loads(out["headline.json"])
    assert {n: head[n] for n in COMPLETE} == json.loads(alone["headline.json"])
    assert all(out[f"curves/{n}"] == alone[f"curves/{n}"] for n in COMPLETE)


def test_with_every_run_there_the_report_is_not_partial(tmp_path, monkeypatch, migrated_store):
    out = aggregate(tmp_path / "p", list(EXPERIMENTS), {n: SEEDS for n in EXPERIMENTS}, migrated_store, monkeypatch)
    assert out["summary.md"].startswith("# SEL benchmark\n\nData: tiny;")
    assert "missing" not in json.loads(out["summary.json"])
    assert '<h1>SEL benchmark: results</h1>\n<p class="caption">Data: tiny;' in out["results.html"]
    assert len(json.loads(out["headline.json"])) == len(EXPERIMENTS)


def test_with_no_run_at_all_the_aggregate_stops_with_one_line(tmp_path, monkeypatch, migrated_store, capsys):
    with pytest.raises(SystemExit) as stopped:
        aggregate(tmp_path / "p", list(EXPERIMENTS), {}, migrated_store, monkeypatch)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run of params.yaml's experiments and seeds" in err and "dvc repro" in err


def test_a_long_list_of_missing_runs_is_cut_with_a_count_of_the_rest():
    runs = {"baseline": {1: {"acc/test_full": 0.5}}}
    missing = [("sel95", seed) for seed in range(2, 40)]
    head, named = partial(summarise(runs, {}, missing=missing))
    assert head == "Partial: 1 of 39 runs"
    assert named.startswith("missing: sel95@2, sel95@3") and named.endswith("sel95@13 and 26 more")
    assert partial(summarise(runs, {})) is None and "Partial" not in markdown(summarise(runs, {}), "note")
