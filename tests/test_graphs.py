"""The training step replayed from a CUDA graph (`train.cuda_graphs`): the same step as eager.

On the CPU, capture is replaced by a recorder whose replay calls the recorded step: what runs is
everything of the graphed path but CUDA's recording (fixed input buffers, warm-up, one capture per
update rule, re-capture after a new optimizer or a resumed state), and it must give the eager
loop's numbers exactly. On a GPU (skipped without one) the real capture must agree with eager
within bf16 noise.
"""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from builders import make_arrays
from sel.train import graphs
from sel.data.dataset import Cifar
from sel.train.device import resolve_cuda_graphs
from sel.core.errors import SelError
from sel.method.selective import Window, candidate_size, epoch_steps
from sel.config.params import ModelParams
from sel.train.model import fresh_model
from sel.train.training import DENSE, MASKED, SEL, Trainer


def trainer(device, graphed, precision="fp32", width=8, seed=0):
    data = Cifar(*make_arrays(12, 3, seed=seed))  # 120 images: 3 full batches of 32 and one of 24
    return Trainer(fresh_model(seed, ModelParams(width=width, pretrained=False), len(data.classes)), data, np.arange(10),
                   device=device, precision=precision, lr=1e-3, batch_size=32, eval_batch_size=64,
                   seed=seed, cuda_graphs=graphed)


def every_rule(t: Trainer, epochs: int = 2) -> list[torch.Tensor]:
    """The update rules of the four experiments, the linear lr and selective backward, each for
    `epochs` epochs; then the weights."""
    everything = torch.arange(len(t.train_set), device=t.device)
    sums = []
    for _ in range(epochs):
        sums.append(t.train_epoch(everything, DENSE))
    for _ in range(epochs):  # a linear lr: each replay reads the run's step count on the device
        sums.append(t.train_epoch(everything, DENSE, lr_line=(0.0, 0.01)))
    for gamma in (1e-4, 5e-5):  # a decayed gamma replays the same graph with the new value
        for _ in range(epochs):
            sums.append(t.train_epoch(everything, SEL, gamma, lr_loss_scale=2.0))
    for _ in range(epochs):
        sums.append(t.train_epoch(everything, SEL, target_sparsity=0.9, measure_ec=False))
    for _ in range(epochs):  # 43 candidates a step: two full steps and one of 34 an epoch
        sums.append(t.train_epoch(everything, DENSE, keep=0.75))
    for e in range(epochs):  # Composer's interrupt: selecting and plain steps by turns, ranked by a history
        steps = epoch_steps(len(everything), 32, 0.75, Window(0.0, 1.0, 2), e, epochs)
        sums.append(t.train_epoch(everything, DENSE, keep=0.75, steps=steps, history=64))
    t.prune_and_rewind(0.5)
    for _ in range(epochs):
        sums.append(t.train_epoch(everything, MASKED))
    return sums + [t.evaluate()] + [p.detach().clone() for p in t.model.parameters()]


class Recorder:
    """Stands in for a CUDA graph: `replay()` runs the recorded step."""

    captured = 0

    def __init__(self, step):
        Recorder.captured += 1
        self.replay = step


def test_graphed_path_gives_the_eager_numbers_exactly(monkeypatch):
    monkeypatch.setattr(graphs, "capture", Recorder)
    monkeypatch.setattr(Recorder, "captured", 0)
    cpu = torch.device("cpu")
    eager, graphed = every_rule(trainer(cpu, False)), every_rule(trainer(cpu, True))
    # dense, dense with a linear lr, SEL with the scaled lr, SEL at a target, selective backward,
    # selective backward ranked by a history (its plain steps are the dense rule's), and the
    # lottery's masked rule after the new optimizer of the prune: seven captures, each after its
    # warm-up steps
    assert Recorder.captured == 7
    assert len(eager) == len(graphed)
    for a, b in zip(eager, graphed):
        assert torch.equal(a, b)


def test_a_resumed_graphed_run_goes_on_as_the_uninterrupted_one(monkeypatch):
    monkeypatch.setattr(graphs, "capture", Recorder)
    cpu = torch.device("cpu")
    everything = torch.arange(120)

    def epochs(t, n):
        for _ in range(n):
            t.train_epoch(everything, SEL, 1e-4, lr_loss_scale=2.0)

    straight, first, resumed = trainer(cpu, True), trainer(cpu, True), trainer(cpu, True)
    epochs(straight, 4)
    epochs(first, 2)
    epochs(resumed, 2)  # its graph captured, then made stale by the load:
    resumed.load_state_dict(first.state_dict())
    assert resumed.optimizer.param_groups[0]["capturable"]
    captured = Recorder.captured
    epochs(resumed, 2)
    assert Recorder.captured == captured + 1  # captured again, with the loaded state
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


class ScalarArguments(TorchDispatchMode):
    """Every operator a step runs, with its arguments that are not tensors."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not str(func).startswith("profiler."):  # the optimizer's record_function markers
            shown = tree_map(lambda a: "tensor" if isinstance(a, torch.Tensor) else a, (args, kwargs))
            self.calls.append((str(func), repr(shown)))
        return func(*args, **(kwargs or {}))


# (update, measure_ec, lr_loss_scale, target_sparsity, decays, keep, weighted, history): training.Rule's fields
@pytest.mark.parametrize("rule", [(DENSE, True, 0.0, None, False, None), (SEL, True, 2.0, None, False, None),
                                  (SEL, False, 0.0, 0.9, False, None), (DENSE, True, 0.0, None, True, None),
                                  (DENSE, True, 0.0, None, False, 0.5), (DENSE, True, 0.0, None, False, 0.5, False, 96)])
def test_a_step_bakes_in_no_value_that_changes_between_its_replays(rule):
    """A graph replays its operators with the scalars of its capture: two steps of one rule, at
    another step index, batch and gamma, must run the same operators with the same scalars
    (after a first step, a warm-up step, in which Adam builds its state)."""
    t = trainer(torch.device("cpu"), False)
    n = candidate_size(32, rule[5])  # a selecting step forwards 64 candidates to train 32
    if len(rule) > 7:  # its history fills as the steps go: a value, not a scalar, of the step
        t.loss_history = torch.full((rule[7],), float("nan"))
    recorded = []
    for step, gamma in ((0, 1e-4), (1, 1e-4), (5, 5e-5)):
        batch = torch.arange(n) + 32 * step % (len(t.train_set) - n)
        t.select_noise[n] = torch.empty(n).exponential_(generator=t.generator)
        t.gamma.fill_(gamma)
        t.step_index.fill_(step)
        x, y = t.train_set.augmented(batch, t.generator), t.train_set.y[batch]
        with ScalarArguments() as seen:
            t._step(x, y, rule)
        recorded.append(seen.calls)
    assert len(recorded[1]) > 50
    assert recorded[1] == recorded[2]


def test_cuda_graphs_setting_is_resolved_or_refused():
    cpu = torch.device("cpu")
    assert resolve_cuda_graphs("auto", cpu, compiled=False) is False
    assert resolve_cuda_graphs("auto", torch.device("cuda"), compiled=False) is True
    assert resolve_cuda_graphs("auto", torch.device("cuda"), compiled=True) is False
    with pytest.raises(SelError, match="train.cuda_graphs = true needs a CUDA device"):
        resolve_cuda_graphs(True, cpu, compiled=False)
    with pytest.raises(SelError, match="choose one"):
        resolve_cuda_graphs(True, torch.device("cuda"), compiled=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_captured_graphs_agree_with_eager_on_the_gpu(precision):
    cuda = torch.device("cuda")
    eager = every_rule(trainer(cuda, False, precision, width=16))
    graphed = every_rule(trainer(cuda, True, precision, width=16))
    # the first sums (loss, accuracy, ...) of each epoch and the final weights: equal up to the
    # order of floating-point sums (fp32) or bf16 rounding carried over 10 epochs
    tolerance = 1e-3 if precision == "fp32" else 5e-2
    for a, b in zip(eager, graphed):
        assert torch.allclose(a.float(), b.float(), rtol=tolerance, atol=tolerance), (a, b)
