"""Stage aggregate: metrics/runs/<experiment>/seed<N>/ of every experiment and seed in
params.yaml -> metrics/summary.json, summary.md, summary.png, metrics/curves/<experiment>.csv
(mean per epoch over seeds), and one MLflow run named `aggregate` holding them."""

import json
from pathlib import Path

import pandas as pd

from sel.cli import stage
from sel.errors import SelError
from sel.files import json_text, run_outputs, staged_outputs
from sel.params import load_params
from sel.report import markdown, mean_curves, summarise
from sel.summary_figure import summary_figure
from sel.tracking import Tracker, run_tags

OUT = Path("metrics")


def read_runs(names, seeds) -> tuple[dict, dict]:
    """({experiment: {seed: summary}}, {experiment: {seed: history}}) of every run listed."""
    summaries, histories = {}, {}
    for name in names:
        for seed in seeds:
            _, history, summary = run_outputs(name, seed)
            if not summary.exists():
                raise SelError(f"missing {summary}: run `dvc repro` (its train stage has not run)")
            summaries.setdefault(name, {})[seed] = json.loads(summary.read_text())
            histories.setdefault(name, {})[seed] = pd.read_csv(history)
    return summaries, histories


def mlflow_metrics(summary: dict) -> dict:
    """`<experiment>.<metric>.<mean|sd|ci_low|ci_high|n>` and `attribution.<factor>.<...>`."""
    out = {}
    for e in summary["experiments"]:
        for metric, stat in e["metrics"].items():
            out.update({f"{e['experiment']}.{metric}.{k}": stat[k] for k in ("mean", "sd", "ci_low", "ci_high", "n")})
    for r in summary["attribution"]:
        out.update({f"attribution.{r['factor']}.{k}": r["test_full"][k] for k in ("mean", "ci_low", "ci_high", "n")})
    return {k: v for k, v in out.items() if v is not None}


@stage
def main():
    params = load_params()
    tracker = Tracker(params.mlflow.experiment)
    names, seeds = params.train_stages.names(), params.seeds
    summaries, histories = read_runs(names, seeds)
    summary = summarise(summaries, params.attribution)
    curves = {name: mean_curves(by_seed) for name, by_seed in histories.items()}
    first = summaries[names[0]][seeds[0]]
    variant = first["data_variant"]
    note = (f"Data: {variant}; model width {first['model_width']}, pretrained {first['pretrained']}; "
            f"device {first['device']}, precision {first['precision']}.")
    curve_files = [OUT / "curves" / f"{name}.csv" for name in curves]
    with staged_outputs(OUT / "summary.json", OUT / "summary.md", OUT / "summary.png", *curve_files) as (js, md, png, *cs):
        js.write_text(json_text({"data_variant": variant, **summary}))
        md.write_text(markdown(summary, note))
        summary_figure(curves, summary, png)
        for (mean, _), path in zip(curves.values(), cs):
            mean.to_csv(path, index=False)
    tracker.start("aggregate", {"data_variant": variant, "seeds": list(seeds), "experiments": list(names)},
                  run_tags("aggregate", {"variant": variant}, device=None, precision=None))
    with tracker.recording():
        tracker.log_metrics(mlflow_metrics(summary), step=0)
        tracker.log_artifacts(OUT / "summary.json", OUT / "summary.md", OUT / "summary.png")
    print((OUT / "summary.md").read_text())


if __name__ == "__main__":
    main()
