"""Speed of our training loop against a faithful re-creation of the original's, in one process,
on the same model width, batch size and device. Prints JSON.

    python -m sel.speed.bench [--full] [--widths 16 64] [--steps 30] [--device auto] [--precision auto]
                        [--keeps 0.5 0.25] [--prunes 0.5 0.7] [--infobatch-kept 0.71 0.60]
                        [--airbench-widths 64 128 128 ...] [--airbench-batch 1024] [--airbench-steps 2]
                        [--repeats 3] [--compile] [--profile]

By default a quick set (width 16, keep 0.5, InfoBatch at r = 0.5, one timing pair per method, and
the airbench net at 64/128/128 for two steps a case: three to four minutes on a 2-core CPU);
`--full` the whole set (widths 16 and 64, keeps 0.5 and 0.25, r = 0.5 and 0.7, three pairs, four
airbench steps a case: tens of minutes there). It prints the expected duration first, from one
timed step per net, and a line per case as it goes.

For a dense and an SEL step at each width: images per second of both loops and their ratio,
host synchronisations per step of each (counted as `aten._local_scalar_dense` calls), achieved
GFLOP/s beside a matmul peak measured on the same device; evaluation throughput of both; and
the projected wall time of the full protocol and of `cpu-small` for both loops. Each loop is
timed under the math it runs with in its own process: the original's under PyTorch's defaults
(TF32 convolutions on Ampere and later GPUs), ours under what its Trainer sets (exact fp32 when
the precision is fp32), each starting from the defaults and leaving them as they were; the settings
each ran with are in the report. On a CUDA device
our step replayed from a CUDA graph too (`train.cuda_graphs`; a graph per step kind, captured in
the warm-up, which is lengthened to hold it). `--compile` adds our step under torch.compile,
`--profile` the share of each operator in our SEL step.

`methods`: each method whose savings are executed against our dense step, in the same process on
the same device: selective backward and the E-driven class draw at each `--keeps` fraction,
InfoBatch at each `--prunes` ratio, timed per image of the epoch they draw from (selective: every
candidate forwarded, the kept share trained; the class draw: the drawn share trained, the draw
included; InfoBatch: the pruning and the weighted steps on what it kept, with scores spread so that
half the images are below the mean, its promise, and again at the share of the images its runs
kept, `--infobatch-kept`, by default read from metrics/runs/infobatch_r<100 r>), so `speedup` is
the epoch's real speedup on this hardware, every extra pass included, beside `flops_ratio`, what
its executed FLOPs promise; each is the median of `--repeats` adjacent (dense, method) pairs.

`airbench`: the same on the airbench-style net (`--airbench-widths`, three channel counts a net)
at airbench's recipe (`airbench_recipe`: SGD with Nesterov momentum, batch `--airbench-batch`,
translate-2 augmentation, label smoothing), SEL's masked step (at a gamma calibrated on it, the
pipeline's train-mode p40) among the methods; its Trainer is built as the pipeline builds it.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sel.speed import original
from sel.scoring.calibration import calibrate_gamma
from sel.method.curriculum import Pools
from sel.data.dataset import Cifar, held_out_indices
from sel.train.device import default_math, describe, math_settings, native_bf16, resolve_device, resolve_precision
from sel.experiments.plan import make_trainer, plan
from sel.method.flops import flops_per_image
from sel.method.selective import candidate_size, epoch_flops
from sel.train.graphs import WARMUP_STEPS
from sel.train.model import build_model, fresh_model
from sel.config.params import ORIGINALS, ModelParams, Params
from sel.config.protocols import PROTOCOLS, airbench_recipe, with_overrides
from sel.train.training import DENSE, SEL, Trainer

BATCH = 64  # the original's, params' default
AIRBENCH_WARMUP = 1  # untimed steps first on the airbench net; the three counted ones follow


class SyncCounter(TorchDispatchMode):
    """Counts reads of a tensor's value back to the host: `aten._local_scalar_dense` (`.item()`,
    `float(t)`, `if t:`) and, on an accelerator, copies from it to the CPU (`.cpu()`, `.tolist()`).
    A CPU tensor's `.tolist()` reads memory without dispatching and is not seen."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        elif func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            source = args[1] if func is torch.ops.aten.copy_.default else args[0]
            if isinstance(out, torch.Tensor) and out.device.type == "cpu" and source.device.type != "cpu":
                self.count += 1
        return out


def synthetic(n_train: int, n_test: int, seed: int = 0) -> Cifar:
    rng = np.random.default_rng(seed)
    images = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    labels = lambda n: np.arange(n, dtype=np.int64) % 10  # noqa: E731
    return Cifar(images(n_train), labels(n_train), images(n_test), labels(n_test), [str(c) for c in range(10)])


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resnet(width: int) -> dict:
    """The original's net and recipe (params' defaults: Adam, lr 1e-3, batch 64) at `width`, from
    scratch, as params overrides: a `net` the bench times."""
    return {"model.width": width, "model.pretrained": False}


def airbench(widths, batch_size: int = 1024) -> dict:
    """The airbench-style net at `widths` under airbench's recipe, as airbench-full trains it."""
    return {**airbench_recipe(batch_size), "model.widths": list(widths)}


def our_trainer(net: dict, device, precision, data, use_compile=False, cuda_graphs=False,
                held_per_class=10) -> Trainer:
    """Our Trainer for `net` built as a pipeline stage builds its baseline's (`make_trainer`, seed
    0), so the step timed is the one the pipeline runs."""
    params = with_overrides({}, {**net, "train.device": str(device), "train.precision": precision,
                                 "train.compile": use_compile, "train.cuda_graphs": cuda_graphs,
                                 "data.held_out_per_class": held_per_class})
    return make_trainer(params, data, params.experiments["baseline"], 0)


def calibrated_gamma(net: dict, device, data) -> float:
    """SEL's gamma on `net`: the p40 of |grad| over a train-mode batch of 128 on its fresh model
    (cpu-small's and airbench-full's calibration), so its masked step zeroes what it would."""
    with default_math():  # its fp32 Trainer's exact_fp32 stays inside
        return calibrate_gamma(our_trainer(net, device, "fp32", data), 128, 40, "train")["gamma"]


def share(method) -> float:
    """The share of an epoch's images a method trains (InfoBatch: the share kept when given, else
    its promise, half below the mean and `ratio` of them left out); 1 for the dense step (`method`
    None) and SEL's (it zeroes gradients, every image trained)."""
    kind, value, *kept = method or (None, 1.0)
    if kind == "infobatch":
        return kept[0] if kept else 1 - value / 2
    return value if kind in ("selective", "class_draw") else 1.0


def kept_share(runs: Path) -> float | None:
    """The mean share of the images an InfoBatch experiment's runs (runs/seed*/) trained per
    epoch that left any out; None without runs. A run records no image count, but its executed
    FLOPs per epoch over its FLOPs per image are its images: the promise of half below the mean
    is not what the losses give."""
    shares = []
    for seed in sorted(runs.glob("seed*")):
        images = np.diff(pd.read_csv(seed / "history.csv")["compute/flops_executed_T"].to_numpy(), prepend=0.0)
        full = images.max()  # the unpruned epochs': the first and the anneal's
        shares += list(images[images < full * (1 - 1e-6)] / full)
    return float(np.mean(shares)) if shares else None


def per_step_images(method, batch=BATCH) -> int:
    """Images of the epoch each step of `method` stands for."""
    return candidate_size(batch, share(method))


def _epoch(trainer, idx, update, gamma, method=None):
    """An epoch of dense steps, or of SEL steps as the original takes them (loss-scaled lr);
    `method`: (selective | class_draw | infobatch | sel, its keep, ratio or gamma[, InfoBatch's
    share kept]), the epoch's draw included; InfoBatch's scores put (1 - kept) / ratio of the
    images below the mean."""
    kind, value, *_ = method or (None, None)
    if kind == "sel":
        update, gamma = SEL, value
    elif kind == "class_draw":
        idx = trainer.draw_by_embarrassment(idx, value, floor=0.5)
    elif kind == "infobatch":
        below = (1 - share(method)) / value
        draw = torch.rand(len(trainer.scores), generator=torch.Generator().manual_seed(0))
        trainer.scores.copy_((draw >= below).float())
        idx = trainer.prune_by_loss(idx, value)
    return trainer.train_epoch(idx, update, gamma, lr_loss_scale=2.0 if update == SEL else 0.0,
                               keep=value if kind == "selective" else None, weighted=kind == "infobatch")


def time_ours(net, update, steps, warmup, device, precision, data, gamma, use_compile=False,
              cuda_graphs=False, method=None):
    """(images per second, host syncs per step, math settings) of our loop on `net` (`resnet`,
    `airbench`), under the math its Trainer sets; a compile or a capture happens in the warm-up.
    With a `method`, each step stands for `per_step_images` of the epoch, and the rate counts
    them all."""
    if cuda_graphs:
        warmup = max(warmup, WARMUP_STEPS + 1)
    with default_math():
        trainer = our_trainer(net, device, precision, data, use_compile, cuda_graphs)
        per_step = per_step_images(method, trainer.batch_size)
        idx = torch.arange(per_step * max(steps, warmup, 3), device=device)
        _epoch(trainer, idx[:per_step * warmup], update, gamma, method).tolist()
        idx = idx[:per_step * steps]
        with SyncCounter() as counter:
            _epoch(trainer, idx[:per_step * 3], update, gamma, method)  # InfoBatch's one read is its prune
        _sync(device)
        started = time.perf_counter()
        _epoch(trainer, idx, update, gamma, method).tolist()
        return per_step * steps / (time.perf_counter() - started), counter.count / 3, math_settings()


def net_flops(net: dict) -> tuple[float, float]:
    """(training, evaluation) FLOPs per image of `net`'s model, counted on its shape."""
    with torch.device("meta"):  # shapes only: no weights drawn, no random state used
        return flops_per_image(build_model(with_overrides({}, net).model, 10))


def time_methods(net, methods, steps, warmup, device, precision, data, repeats=3, on_row=None) -> list[dict]:
    """Each method's epoch images per second on `net` against our dense step's, eager and (on
    CUDA) graphed, with the ratio its executed FLOPs promise. The two are timed in `repeats`
    adjacent pairs and the median pair's ratio reported (`on_row(row)` as each is done): on a
    shared machine the load drifts between cases timed minutes apart."""
    params = with_overrides({}, net)
    model, batch = params.model, params.train.batch_size
    name = {"widths": list(model.widths)} if model.arch == "airbench" else {"width": model.width}
    train, evaluation = net_flops(net)
    loops = [("ours", False)] + ([("graphed", True)] if device.type == "cuda" else [])
    rows = []
    for method in methods:
        kind, value, *kept = method
        executed = (epoch_flops(1000, batch, value, train, evaluation) if kind == "selective"
                    else train * 1000 * share(method))
        knob = {"selective": "keep", "class_draw": "keep", "infobatch": "ratio", "sel": "gamma"}[kind]
        row = {**name, "method": kind, knob: value, "flops_ratio": round(train * 1000 / executed, 2)}
        if kind == "infobatch":
            row.update(kept=round(share(method), 3), kept_from="measured" if kept else "promise")
        for loop, graphed in loops:
            pairs = []
            for _ in range(repeats):
                dense, _, _ = time_ours(net, DENSE, steps, warmup, device, precision, data, None,
                                        cuda_graphs=graphed)
                rate, syncs, _ = time_ours(net, DENSE, steps, warmup, device, precision, data, None,
                                           cuda_graphs=graphed, method=method)
                pairs.append((rate / dense, rate, dense))
            ratio, rate, dense = sorted(pairs)[len(pairs) // 2]
            row.update({f"{loop}_img_s": round(rate, 1), f"{loop}_dense_img_s": round(dense, 1),
                        f"{loop}_speedup": round(ratio, 2), f"{loop}_syncs_per_step": syncs})
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def time_airbench(nets, batch, methods, steps, device, precision, data, repeats=3, on_row=None) -> dict:
    """The report's `airbench` section: on each net (its three widths) at airbench's recipe and
    `batch`, SEL's masked step and each method against our dense step (`time_methods`)."""
    rows = []
    for widths in nets:
        net = airbench(widths, batch)
        rows += time_methods(net, [("sel", calibrated_gamma(net, device, data))] + methods, steps,
                             AIRBENCH_WARMUP, device, precision, data, repeats, on_row)
    return {"batch": batch, "steps": steps, "methods": rows}


def profile_ours(width, steps, device, precision, data, gamma, top=10) -> list[dict]:
    """Share of the time of our SEL steps per operator (torch.profiler, self time)."""
    from torch.profiler import profile

    with default_math():
        trainer = our_trainer(resnet(width), device, precision, data)
        idx = torch.arange(BATCH * steps, device=device)
        _epoch(trainer, idx[:BATCH * 3], SEL, gamma).tolist()
        with profile() as prof:
            _epoch(trainer, idx, SEL, gamma).tolist()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3)} for e in ranked]


def time_original(width, update, steps, warmup, device, data, gamma):
    """(images per second, host syncs per step, math settings) of the original's loop, steady
    state, under PyTorch's default math, as the original ran."""
    with default_math():
        model = fresh_model(0, ModelParams(width=width, pretrained=False), 10).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = iter(original.loader(data.x_train, data.y_train, train=True))
        g = gamma if update == SEL else None
        for _ in range(warmup):
            original.train_step(model, optimizer, *next(batches), device, g)
        with SyncCounter() as counter:
            for _ in range(3):
                original.train_step(model, optimizer, *next(batches), device, g)
        _sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            original.train_step(model, optimizer, *next(batches), device, g)
        _sync(device)
        return BATCH * steps / (time.perf_counter() - started), counter.count / 3, math_settings()


def eval_rates(width, device, precision, data, held_per_class):
    """Images per second evaluated by our loop (one pass over the test set) and by the original's
    (a pass over the test set, then one over the held-out subset), each under its own math."""
    held = held_out_indices(data.y_test, held_per_class, 10)
    with default_math():
        trainer = our_trainer(resnet(width), device, precision, data, held_per_class=held_per_class)
        trainer.evaluate().tolist()
        ours = len(data.y_test) / _median_seconds(lambda: trainer.evaluate().tolist())
    with default_math():
        model = fresh_model(0, ModelParams(width=width, pretrained=False), 10).to(device)
        test = original.loader(data.x_test, data.y_test, train=False)
        held_loader = original.loader(data.x_test[held], data.y_test[held], train=False)
        seconds = _median_seconds(lambda: original.evaluate(model, test, held_loader, device))
    return ours, (len(data.y_test) + len(held)) / seconds


def _median_seconds(work, repeats=3) -> float:
    """Median wall time of `work()`: one evaluation pass is short enough to be noisy."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def matmul_peak(device, dtype, n=2048, reps=10) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - started) / 1e9


def matmul_peaks(device) -> dict:
    """fp32, and bf16 where the hardware has it (emulated bf16 runs at ~1 GFLOP/s on an AVX2 CPU)."""
    peaks = {"fp32": matmul_peak(device, torch.float32)}
    if native_bf16(device):
        peaks["bf16"] = matmul_peak(device, torch.bfloat16)
    return peaks


def protocol_work(params: Params, train_per_class: int, test_per_class: int) -> dict:
    """Images each loop trains (dense and SEL steps) and evaluates over the four experiments."""
    n_classes = 10
    pools = Pools(np.arange(train_per_class * n_classes), np.full(n_classes, train_per_class))
    work = {"dense": 0, "sel": 0, "eval_epochs": 0, "original_extra_evals": 0}
    for name in ORIGINALS:
        for phase in plan(params.experiments[name], params, train_per_class * n_classes, pools, 1.0):
            work["sel" if phase.update == SEL else "dense"] += phase.epochs * len(phase.indices)
            work["eval_epochs"] += phase.epochs if phase.recorded else 0
            if not phase.recorded:  # the original tested every 5th pre-training epoch
                work["original_extra_evals"] += phase.epochs // 5
    work["test_images"] = test_per_class * n_classes
    work["held_out_images"] = params.data.held_out_per_class * n_classes
    return work


def projected_seconds(work: dict, rates: dict) -> dict:
    """Wall time of a protocol from per-image rates (steady state: start-up costs not included)."""
    out = {}
    for loop in ("ours", "graphed", "original"):
        if f"{loop}_dense" not in rates:  # graphed: CUDA only
            continue
        train = work["dense"] / rates[f"{loop}_dense"] + work["sel"] / rates[f"{loop}_sel"]
        per_eval = work["test_images"] + (work["held_out_images"] if loop == "original" else 0)
        evals = work["eval_epochs"] * per_eval
        if loop == "original":
            evals += work["original_extra_evals"] * work["test_images"]
        out[loop] = train + evals / rates[f"{loop}_eval" if loop == "original" else "ours_eval"]
    out["ratio"] = out["original"] / out["ours"]
    if "graphed" in out:
        out["graphed_ratio"] = out["original"] / out["graphed"]
    return out


QUICK = {"widths": [16], "keeps": [0.5], "prunes": [0.5], "repeats": 1,
         "airbench_widths": [64, 128, 128], "airbench_steps": 2}
FULL = {"widths": [16, 64], "keeps": [0.5, 0.25], "prunes": [0.5, 0.7], "repeats": 3,
        "airbench_widths": [64, 128, 128], "airbench_steps": 4}


def images_needed(batch, steps, warmup, methods) -> int:
    """Training images `time_ours` may draw from for any of `methods` at `batch` (a capture's
    longer warm-up included)."""
    return max(per_step_images(m, batch) for m in methods + [None]) * (steps + max(warmup, WARMUP_STEPS + 1) + 3)


def pairs_seconds(step, batch, methods, steps, warmup, repeats) -> float:
    """Seconds of the (dense, method) pairs at `step` seconds a dense step, each method's steps
    weighed by the images they forward."""
    return step * sum(1 + per_step_images(m, batch) / batch for m in methods) * repeats * (steps + warmup + 3)


def expected_seconds(args, methods: list, nets: list, device, precision, data) -> float:
    """About how long the run takes: the training steps it times (both loops' dense and SEL
    cases, each method's pairs and the airbench nets', warm-ups included) at one measured dense
    step per net."""
    total = 0.0
    for width in args.widths:
        step = 1 / time_ours(resnet(width), DENSE, 3, 1, device, precision, data, None)[0] * BATCH
        total += step * 4 * (args.steps + args.warmup) + pairs_seconds(step, BATCH, methods, args.steps,
                                                                       args.warmup, args.repeats)
    for widths in nets:
        batch = args.airbench_batch
        step = batch / time_ours(airbench(widths, batch), DENSE, 1, 1, device, precision, data, None)[0]
        total += pairs_seconds(step, batch, [("sel", 0.0)] + methods, args.airbench_steps, AIRBENCH_WARMUP,
                               args.repeats)
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="the whole set: " + ", ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in FULL.items()))
    ap.add_argument("--widths", type=int, nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per case")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--keeps", type=float, nargs="*", default=None,
                    help="selective backward's and the class draw's keep fractions to time against the dense step")
    ap.add_argument("--prunes", type=float, nargs="*", default=None,
                    help="InfoBatch's prune ratios to time against the dense step")
    ap.add_argument("--infobatch-kept", type=float, nargs="+", default=None,
                    help="InfoBatch's share of the images kept per pruned epoch, one per --prunes ratio, timed "
                         "beside its promise (default: what metrics/runs/infobatch_r<100 r> kept, where present)")
    ap.add_argument("--airbench-widths", type=int, nargs="*", default=None,
                    help="the airbench nets to time the methods on, three channel counts each (airbench93: "
                         "64 128 128; airbench94: 64 256 256); none: no airbench section")
    ap.add_argument("--airbench-batch", type=int, default=1024, help="the airbench nets' batch (airbench's: 1024)")
    ap.add_argument("--airbench-steps", type=int, default=None, help="timed steps per airbench case")
    ap.add_argument("--repeats", type=int, default=None, help="adjacent (dense, method) timings per method")
    ap.add_argument("--compile", action="store_true", help="also time our step under torch.compile")
    ap.add_argument("--profile", action="store_true", help="add where our SEL step spends its time")
    args = ap.parse_args(argv)
    for key, value in (FULL if args.full else QUICK).items():  # what is not given on the command line
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    kept = args.infobatch_kept if args.infobatch_kept is not None else \
        [kept_share(Path("metrics/runs") / f"infobatch_r{round(100 * r)}") for r in args.prunes]
    if len(kept) != len(args.prunes):
        ap.error("--infobatch-kept: one share per --prunes ratio")
    if len(args.airbench_widths) % 3:
        ap.error("--airbench-widths: three channel counts per net, as 64 128 128")
    nets = [args.airbench_widths[i:i + 3] for i in range(0, len(args.airbench_widths), 3)]
    methods = ([("selective", k) for k in args.keeps] + [("class_draw", k) for k in args.keeps]
               + [m for r, k in zip(args.prunes, kept)
                  for m in [("infobatch", r)] + ([("infobatch", r, k)] if k is not None else [])])
    airbench_images = images_needed(args.airbench_batch, args.airbench_steps, AIRBENCH_WARMUP, methods) if nets else 0
    data = synthetic(max(images_needed(BATCH, args.steps, args.warmup, methods), airbench_images), 1000)
    started = time.perf_counter()
    expected = expected_seconds(args, methods, nets, device, precision, data)
    on_airbench = (f"; airbench {nets} at batch {args.airbench_batch}, SEL and the methods, {args.airbench_steps} "
                   f"steps a case" if nets else "")
    print(f"[bench] widths {args.widths}, {len(methods)} methods x {args.repeats} pairs, {args.steps} steps a case"
          f"{on_airbench}: expected about {expected / 60:.1f} min on {describe(device)}", file=sys.stderr, flush=True)

    def say(what: dict) -> None:
        print(f"[bench {time.perf_counter() - started:.0f}s] {json.dumps(what)}", file=sys.stderr, flush=True)

    report = {"device": describe(device), "precision": precision, "batch": BATCH,
              "matmul_peak_gflops": matmul_peaks(device),
              "cases": [], "methods": [], "eval": [], "projected_s": {}}
    rates = {}
    for width in args.widths:
        net = resnet(width)
        train_gflop = net_flops(net)[0] / 1e9
        gamma = calibrated_gamma(net, device, data)
        for update in (DENSE, SEL):
            ours, ours_syncs, ours_math = time_ours(net, update, args.steps, args.warmup, device, precision,
                                                    data, gamma)
            orig, orig_syncs, orig_math = time_original(width, update, args.steps, args.warmup, device, data, gamma)
            rates[(width, f"ours_{update}")], rates[(width, f"original_{update}")] = ours, orig
            report["cases"].append({
                "width": width, "step": update, "ours_img_s": round(ours, 1), "original_img_s": round(orig, 1),
                "speedup": round(ours / orig, 2), "ours_syncs_per_step": ours_syncs,
                "original_syncs_per_step": orig_syncs, "ours_gflops": round(ours * train_gflop, 1),
                "original_gflops": round(orig * train_gflop, 1), "ours_math": ours_math,
                "original_math": orig_math})
            if device.type == "cuda":
                graphed, _, _ = time_ours(net, update, args.steps, args.warmup, device, precision, data,
                                       gamma, cuda_graphs=True)
                rates[(width, f"graphed_{update}")] = graphed
                report["cases"][-1].update({"ours_graphed_img_s": round(graphed, 1),
                                            "graphed_speedup": round(graphed / orig, 2)})
            if args.compile:
                compiled, _, _ = time_ours(net, update, args.steps, args.warmup, device, precision, data,
                                        gamma, use_compile=True)
                report["cases"][-1]["ours_compiled_img_s"] = round(compiled, 1)
            say(report["cases"][-1])
        report["methods"] += time_methods(net, methods, args.steps, args.warmup, device, precision, data,
                                          args.repeats, on_row=say)
        if args.profile:
            report.setdefault("profile_sel_step", {})[width] = profile_ours(
                width, args.steps, device, precision, data, gamma)
        ours_eval, orig_eval = eval_rates(width, device, precision, data, 10)
        rates[(width, "ours_eval")], rates[(width, "original_eval")] = ours_eval, orig_eval
        report["eval"].append({"width": width, "ours_img_s": round(ours_eval, 1),
                               "original_img_s": round(orig_eval, 1), "speedup": round(ours_eval / orig_eval, 2)})
    if nets:
        report["airbench"] = time_airbench(nets, args.airbench_batch, methods, args.airbench_steps, device,
                                           precision, data, args.repeats, on_row=say)
    raw = {"model": {"pretrained": False}}
    for name, width, per_class, test in (("full", 64, 5000, 1000), ("cpu-small", 16, 1000, 300)):
        if width in args.widths:
            params = with_overrides(raw, PROTOCOLS[name])
            work = protocol_work(params, per_class, test)
            proj = projected_seconds(work, {k[1]: v for k, v in rates.items() if k[0] == width})
            report["projected_s"][name] = {k: round(v, 1 if k != "ratio" else 2) for k, v in proj.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
