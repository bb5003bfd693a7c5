"""What the aggregate reads: every listed run's summary and history, and a line naming the
protocol they ran."""

import json

import pandas as pd

from sel.core.errors import SelError
from sel.core.files import run_outputs


def read_runs(names, seeds) -> tuple[dict, dict, dict]:
    """({experiment: {seed: summary}}, {experiment: {seed: history}}, {experiment: {seed: validation
    curve}}) of every run listed; a run made before validation.csv existed has an empty curve."""
    summaries, histories, validations = {}, {}, {}
    for name in names:
        for seed in seeds:
            _, history, summary, validation = run_outputs(name, seed)
            if not summary.exists():
                raise SelError(f"missing {summary}: run `dvc repro` (its train stage has not run)")
            summaries.setdefault(name, {})[seed] = json.loads(summary.read_text())
            histories.setdefault(name, {})[seed] = pd.read_csv(history)
            validations.setdefault(name, {})[seed] = (pd.read_csv(validation) if validation.exists()
                                                      else pd.DataFrame())
    return summaries, histories, validations


def protocol(summaries: dict, seeds: list[int]) -> str:
    """One line naming what was run: data, model, device, seeds and each experiment's epochs."""
    first = summaries[next(iter(summaries))][seeds[0]]
    epochs = ", ".join(f"{name} {by_seed[seeds[0]]['epochs']}" for name, by_seed in summaries.items())
    if first.get("model_arch") == "airbench":
        model = f"airbench-style net, widths {'/'.join(map(str, first['model_widths']))}"
    else:
        model = f"ResNet-18 width {first['model_width']}, pretrained {first['pretrained']}"
    return (f"Data: {first['data_variant']}; {model}; device {first['device']}, precision {first['precision']}; "
            f"seeds {', '.join(map(str, seeds))}; epochs recorded: {epochs}.")
