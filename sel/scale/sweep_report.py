"""A sweep's aggregate: the statistics over seeds of each experiment at each point of the grid
(the aggregate stage's, by point), as files in the sweep's folder and one MLflow run."""

import json
from pathlib import Path

from sel.core.files import json_text, staged_outputs
from sel.config.params import parse_params
from sel.report.summary import cell, mlflow_metrics, summarise
from sel.track.tracking import Tracker, run_tags

COLUMNS = [("acc/test_full", "Full test"), ("acc/test_100", "Held-out"),
           ("compute/flops_executed_T", "Executed FLOPs (T)"), ("compute/time_s", "Time (s)"),
           ("compute/saved_executed_pct", "Saved, executed"), ("sparsity/sparsity", "Grad. sparsity")]


def by_point(trials) -> list[tuple[dict, dict]]:
    """[(point, {experiment: {seed: summary.json}})] in grid order."""
    points: dict[str, tuple[dict, dict]] = {}
    for t in trials:
        _, summaries = points.setdefault(json.dumps(t.point, sort_keys=True), (t.point, {}))
        summary = json.loads((t.step.folder / t.step.output).read_text())
        summaries.setdefault(t.experiment, {})[t.seed] = summary
    return list(points.values())


def markdown(name: str, rows: list[tuple[str, dict, dict]]) -> str:
    lines = [f"# Sweep {name}", "", "Each cell: the final epoch's mean over the seeds ± half its 95% "
             "interval (Student t). Points: the grid's overrides.", "",
             "| Point | Overrides | System | n | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---" * (4 + len(COLUMNS)) + "|"]
    for pid, point, summary in rows:
        shown = ", ".join(f"{k}={v}" for k, v in point.items()) or "-"
        for e in summary["experiments"]:
            cells = [cell(e["metrics"].get(k), k, ".0f" if k == "compute/time_s" else ".4g") for k, _ in COLUMNS]
            lines.append(f"| {pid} | {shown} | {e['system']} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def open_sweep_run(tracker: Tracker, name: str, params: dict, tags: dict) -> None:
    """Open the sweep's one aggregate run: a rerun logs into the run it finds by the `sweep` tag
    (the metrics' new values at step 0 become their latest). MLflow keeps params as first
    logged, so a run of other points (the grid changed) is deleted, restorable with `mlflow runs
    restore`, and a new one started."""
    for found in tracker.client.search_runs([tracker.experiment_id], f"tags.sweep = '{name}'"):
        if found.data.params == params and tracker.resume(found.info.run_id, tags) is not None:
            return
        tracker.client.delete_run(found.info.run_id)
    tracker.start(f"sweep:{name}", params, tags)


def aggregate(grid: dict, trials, folder: Path) -> None:
    """summary.json and summary.md in the sweep's folder, and the sweep's aggregate MLflow run
    `sweep:<name>` in `<mlflow.experiment>-aggregate` (metrics as the aggregate stage's, with
    the point: `test_full/p1.sel95.mean`; params `point.p1` name the overrides)."""
    params = parse_params(trials[0].raw)
    rows = [(f"p{i}", point, summarise(summaries, params.attribution))
            for i, (point, summaries) in enumerate(by_point(trials))]
    with staged_outputs(folder / "summary.json", folder / "summary.md") as (js, md):
        js.write_text(json_text({"sweep": grid["name"], "grid": grid.get("grid") or {},
                                 "points": [{"point": pid, "overrides": point, **summary}
                                            for pid, point, summary in rows]}))
        md.write_text(markdown(grid["name"], rows))
    tracker = Tracker(f"{params.mlflow.experiment}-aggregate")
    open_sweep_run(tracker, grid["name"], {f"point.{pid}": json.dumps(point) for pid, point, _ in rows},
                   {**run_tags("aggregate", {}, device=None, precision=None), "sweep": grid["name"]})
    with tracker.recording():
        metrics = {}
        for pid, _, summary in rows:
            metrics.update(mlflow_metrics(summary, f"{pid}."))
        tracker.log_metrics(metrics, step=0)
        tracker.log_artifacts(folder / "summary.json", folder / "summary.md")
    print(f"sweep {grid['name']}: {len(trials)} trials; {folder / 'summary.md'}")
    print((folder / "summary.md").read_text())
