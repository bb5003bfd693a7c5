"""Stage aggregate: metrics/runs/<experiment>/seed<N>/ of every experiment and seed in
params.yaml -> metrics/summary.json, summary.md, summary.png and .svg, results.html (the results
page), metrics/curves/<experiment>.csv (mean per epoch over seeds), metrics/plots/*.csv (the
same, long, for `dvc plots`), and one MLflow run `aggregate` holding them, in an MLflow
experiment of its own (`<mlflow.experiment>-aggregate`) so that it stays out of the training
runs' tables and charts. Run alone (`dvc repro --single-item aggregate`) between the pieces of a
protocol longer than a session, it reports the runs that have trained and names the others."""

from pathlib import Path

from sel.core.cli import stage
from sel.core.files import json_text, staged_outputs
from sel.config.params import load_params
from sel.report.frontier import frontier_rungs
from sel.report.summary import (classes_of, headline, long_curves, markdown, mean_curves, mlflow_metrics, partial,
                                summarise)
from sel.report.runs import first_run, protocol, read_runs
from sel.report.results_page import class_rows, group_of, write_results_page
from sel.report.summary_figure import summary_figure
from sel.track.tracking import Tracker, run_tags

OUT = Path("metrics")


@stage
def main():
    params = load_params()
    tracker = Tracker(f"{params.mlflow.experiment}-aggregate")
    names, seeds = params.train_stages.names(), params.seeds
    summaries, histories, validations, missing = read_runs(names, seeds)
    curves = {name: mean_curves(by_seed) for name, by_seed in histories.items()}
    classes = classes_of(next(iter(curves.values()))[0])
    n_test = (params.data.test_per_class or 1000) * len(classes)  # null: CIFAR-10's 1,000 per class
    specs = {name: params.experiments[name] for name in names}
    # a rung is in the page's frontier group whether it has run or not; the frontier is the rungs that have
    rungs = {rung for ladder in frontier_rungs(specs).values() for rung in ladder}
    summary = summarise(summaries, params.attribution, validations,
                        {name: spec.lr_schedule for name, spec in specs.items()}, n_test,
                        params.report.targets, frontier_rungs({name: specs[name] for name in summaries}), missing)
    variant = first_run(summaries)["data_variant"]
    caption = protocol(summaries, seeds)
    curve_files = [OUT / "curves" / f"{name}.csv" for name in curves]
    files = [OUT / f for f in ("summary.json", "summary.md", "summary.png", "summary.svg", "results.html",
                               "headline.json", "plots/experiments.csv", "plots/classes.csv")]
    data = params.data
    whole_test_set = data.test_per_class is not None and data.held_out_per_class >= data.test_per_class
    with staged_outputs(*files, *curve_files) as (js, md, png, svg, page, head, lines, per_class, *cs):
        js.write_text(json_text({"data_variant": variant, **summary}))
        md.write_text(markdown(summary, caption, held_out_is_test_set=whole_test_set))
        head.write_text(json_text(headline(summary)))
        summary_figure(curves, summary, caption, png, svg)
        write_results_page(curves, summary, classes, caption, md.read_text(), page,
                           {name: group_of(name, spec, rungs) for name, spec in specs.items()})
        long_curves(curves).to_csv(lines, index=False)
        class_rows(curves, classes).to_csv(per_class, index=False)
        for (mean, _), path in zip(curves.values(), cs):
            mean.to_csv(path, index=False)
    gap = partial(summary)
    tracker.start("aggregate", {"data_variant": variant, "seeds": list(seeds), "experiments": list(summaries)},
                  {**run_tags("aggregate", {"variant": variant}, device=None, precision=None),
                   **({"partial": gap[0]} if gap else {})})
    with tracker.recording():
        tracker.log_metrics(mlflow_metrics(summary), step=0)
        tracker.log_artifacts(*files[:5])
    print((OUT / "summary.md").read_text())


if __name__ == "__main__":
    main()
