"""What the aggregate reads: the summary and history of every listed run that has trained, the
listed runs that have not, and a line naming the protocol they ran."""

import json

import pandas as pd

from sel.core.errors import SelError
from sel.core.files import run_outputs


def read_runs(names, seeds) -> tuple[dict, dict, dict, list[tuple[str, int]]]:
    """({experiment: {seed: summary}}, {experiment: {seed: history}}, {experiment: {seed: validation
    curve}}, [(experiment, seed) not trained yet]) of the runs listed, in their order; a run made
    before validation.csv existed has an empty curve. An absent run is reported, not an error: a
    protocol longer than a session trains in pieces, and `dvc repro --single-item aggregate`
    between them reports what exists (a plain `dvc repro` trains every run first)."""
    summaries, histories, validations, missing = {}, {}, {}, []
    for name in names:
        for seed in seeds:
            _, history, summary, validation = run_outputs(name, seed)
            if not summary.exists():
                missing.append((name, seed))
                continue
            summaries.setdefault(name, {})[seed] = json.loads(summary.read_text())
            histories.setdefault(name, {})[seed] = pd.read_csv(history)
            validations.setdefault(name, {})[seed] = (pd.read_csv(validation) if validation.exists()
                                                      else pd.DataFrame())
    if not summaries:
        raise SelError("no run of params.yaml's experiments and seeds in metrics/runs: run `dvc repro` "
                       "(their train stages have not run)")
    return summaries, histories, validations, missing


def first_run(summaries: dict) -> dict:
    """The summary of the first listed run there is ({experiment: {seed: summary}}): what the runs
    share (data, model, device) is read there, as any run may be missing."""
    return next(iter(next(iter(summaries.values())).values()))


def protocol(summaries: dict, seeds: list[int]) -> str:
    """One line naming what was run: data, model, device, seeds and each experiment's epochs (of
    its first seed that ran)."""
    first = first_run(summaries)
    epochs = ", ".join(f"{name} {next(iter(by_seed.values()))['epochs']}" for name, by_seed in summaries.items())
    if first.get("model_arch") == "airbench":
        model = f"airbench-style net, widths {'/'.join(map(str, first['model_widths']))}"
    else:
        model = f"ResNet-18 width {first['model_width']}, pretrained {first['pretrained']}"
    return (f"Data: {first['data_variant']}; {model}; device {first['device']}, precision {first['precision']}; "
            f"seeds {', '.join(map(str, seeds))}; epochs recorded: {epochs}.")
