"""Stage download: one source (URL, archive or folders) -> data/cifar10.npz + data/cifar10.json."""

import dataclasses
import time

from sel.core.cli import stage
from sel.data.dataset import subsample
from sel.core.files import anchored, json_text, project_root, staged_outputs
from sel.config.params import load_params
from sel.data.sources import read_source


@stage
def main():
    params = load_params().data
    started = time.perf_counter()
    data, provenance = read_source(params.source, params.md5, anchored("data/downloads"), project_root())
    available = data.counts()
    data = subsample(data, params.train_per_class, params.test_per_class, params.val_per_class)
    manifest = {**dataclasses.asdict(provenance), "classes": data.classes,
                "available": available, "counts": data.counts(),
                "train_per_class": params.train_per_class, "test_per_class": params.test_per_class,
                "val_per_class": params.val_per_class}
    with staged_outputs("data/cifar10.npz", "data/cifar10.json") as (npz, man):
        data.save(npz)
        man.write_text(json_text(manifest))
    print(f"wrote data/cifar10.npz: {len(data.y_train)} train, "
          f"{f'{len(data.y_val)} validation, ' if len(data.y_val) else ''}{len(data.y_test)} test images "
          f"({provenance.variant}) in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
