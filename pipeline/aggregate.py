"""Stage aggregate: metrics/<experiment>/ -> metrics/summary.json, summary.md, summary.png,
and one MLflow run named `aggregate` holding them."""

import json
from pathlib import Path

import pandas as pd

from sel.cli import stage
from sel.figures import summary_figure
from sel.files import json_text, staged_outputs
from sel.params import EXPERIMENTS, load_params
from sel.report import markdown, summary_table
from sel.tracking import Tracker, run_tags

OUT = Path("metrics")


@stage
def main():
    params = load_params()
    tracker = Tracker(params.mlflow.experiment)
    summaries = {n: json.loads((OUT / n / "summary.json").read_text()) for n in EXPERIMENTS}
    histories = {n: pd.read_csv(OUT / n / "history.csv") for n in EXPERIMENTS}
    table = summary_table(summaries)
    variant = summaries["baseline"]["data_variant"]
    base = summaries["baseline"]
    note = (f"Data: {variant}; model width {base['model_width']}, pretrained {base['pretrained']}; "
            f"device {base['device']}, precision {base['precision']}.")
    records = table.to_dict(orient="records")
    with staged_outputs(OUT / "summary.json", OUT / "summary.md", OUT / "summary.png") as (js, md, png):
        js.write_text(json_text({"data_variant": variant, "experiments": records}))
        md.write_text(markdown(table, variant, note))
        summary_figure(histories, table, png)
    tracker.start("aggregate", {"data_variant": variant},
                  run_tags("aggregate", {"variant": variant}, device=None, precision=None))
    try:
        tracker.log_metrics({f"{r['experiment']}.{k}": v for r in records for k, v in r.items()
                             if isinstance(v, (int, float)) and v is not None}, step=0)
        tracker.log_artifacts(OUT / "summary.json", OUT / "summary.md", OUT / "summary.png")
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    print((OUT / "summary.md").read_text())


if __name__ == "__main__":
    main()
