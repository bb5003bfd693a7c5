"""Selective backward (`experiments.*.selective_keep`): the draw follows Composer's weights, the
step trains a fixed-size share and reads nothing back to the host, and the executed FLOPs count
exactly the forwards and backwards the step ran."""

import numpy as np
import pytest
import torch

from builders import make_arrays
from sel.data.dataset import Cifar
from sel.config.params import Experiment, ModelParams, Params
from sel.experiments.plan import ExperimentRun, Phase, plan
from sel.method.curriculum import Pools
from sel.method.flops import flops_per_image
from sel.method.selective import (Window, candidate_size, epoch_flops, epoch_steps, history_percentile, kept_count,
                                  select_by_loss, trained_images)
from sel.speed.bench import SyncCounter
from sel.train.model import fresh_model
from sel.train.training import DENSE, SEL, Trainer, unpack_sums

CPU = torch.device("cpu")


def tiny_trainer(batch_size=8, seed=0) -> Trainer:
    data = Cifar(*make_arrays(4, 3, seed=seed))  # 40 training images
    return Trainer(fresh_model(seed, ModelParams(width=4, pretrained=False), len(data.classes)), data, np.arange(10), device=CPU,
                   precision="fp32", lr=1e-3, batch_size=batch_size, eval_batch_size=64, seed=seed)


class ForwardLog:
    """The batch size of every forward of `model`, and whether it built an autograd graph."""

    def __init__(self, model):
        self.calls = []
        model.register_forward_hook(lambda m, inputs, out: self.calls.append(
            (len(inputs[0]), out.requires_grad)))

    def images(self, trained: bool) -> list[int]:
        return [n for n, grad in self.calls if grad == trained]


def test_sizes_by_hand():
    assert candidate_size(64, 0.5) == 128 and candidate_size(64, 0.25) == 256
    assert candidate_size(64, 0.3) == 214 and kept_count(214, 64, 0.3) == 64  # ceil: never fewer
    assert candidate_size(64, None) == 64 and candidate_size(64, 1.0) == 64
    assert kept_count(5, 64, 0.5) == 2 and kept_count(1, 64, 0.25) == 1
    # 10 images, batch 2, keep 0.5: steps of 4, 4 and 2 candidates keep 2, 2 and 1
    assert trained_images(10, 2, 0.5) == 5 and trained_images(10, 2, None) == 10
    # each candidate forwarded once (1 FLOP), each kept image forwarded and backpropagated (3)
    assert epoch_flops(10, 2, 0.5, train_flops=3, eval_flops=1) == 10 * 1 + 5 * 3
    assert epoch_flops(10, 2, None, train_flops=3, eval_flops=1) == 10 * 3


def test_composers_schedule_selects_between_start_and_end_except_every_interrupt_th_step():
    """Composer's defaults (start 0.5, end 0.9, interrupt 2) over a run of 4 epochs of 8 images,
    batch 2, keep 0.5: epochs 0 and 1 plain; from 0.5 on, selecting steps of 4 candidates and
    every second step plain, by turns; the last epoch selects until 0.9 of the run."""
    composer = Window()
    steps = [epoch_steps(8, 2, 0.5, composer, e, 4) for e in range(4)]
    assert steps[0] == steps[1] == [(2, False)] * 4
    assert steps[2] == [(4, True), (2, False), (2, True)]  # 2 left: a last, smaller selecting step
    # epoch 3 starts at 0.75: select, plain, then at 0.75 + 6/8/4 = 0.9375 the window has closed
    assert steps[3] == [(4, True), (2, False), (2, False)]
    assert epoch_steps(8, 2, 0.5, Window(0.0, 1.0, None)) == [(4, True), (4, True)]  # the ablation
    assert epoch_steps(8, 2, None, composer, 2, 4) == [(2, False)] * 4  # no keep: never
    # the FLOPs count what ran: a candidate forward (1) for each selected-from image, a training
    # pass (3) for each trained one: epoch 2 trains 2 + 2 + 1 of its 8 and forwards 4 + 2 candidates
    assert epoch_flops(8, 2, 0.5, 3, 1, composer, 2, 4) == 6 * 1 + 5 * 3
    assert trained_images(8, 2, 0.5, composer, 2, 4) == 5


def test_the_history_ranks_a_loss_among_the_past_ones():
    history = torch.tensor([0.1, 0.2, 0.3, float("nan")])  # three set, one not yet
    assert history_percentile(torch.tensor([0.05, 0.25, 9.0]), history).tolist() == \
        pytest.approx([0.5 / 4, 2.5 / 4, 3.5 / 4])
    empty = torch.full((4,), float("nan"))
    assert history_percentile(torch.tensor([0.1, 5.0]), empty).tolist() == [0.5, 0.5]  # uniform until set


def test_the_draw_follows_composers_weights():
    """One of four candidates kept, 40,000 times: the candidate at loss percentile p is drawn with
    probability p^(1/keep - 1), normalised (keep 0.5: 1/16, 3/16, 5/16, 7/16 by rising loss)."""
    losses = torch.tensor([0.3, 2.0, 0.1, 0.9])  # ranks 1, 3, 0, 2
    generator = torch.Generator().manual_seed(0)
    for keep in (0.5, 0.25, 1.0):
        noise = torch.empty(40_000, 4).exponential_(generator=generator)
        chosen = select_by_loss(losses, 1, keep, noise).flatten()
        drawn = torch.bincount(chosen, minlength=4).float() / len(chosen)
        weights = ((torch.tensor([1, 3, 0, 2]) + 0.5) / 4) ** (1 / keep - 1)
        assert drawn.tolist() == pytest.approx((weights / weights.sum()).tolist(), abs=0.01), keep


def test_the_draw_keeps_distinct_candidates_and_with_equal_noise_the_highest_losses():
    losses = torch.tensor([0.3, 2.0, 0.1, 0.9, 1.5, 0.0])
    chosen = select_by_loss(losses, 3, 0.5, torch.ones(6))
    assert sorted(chosen.tolist()) == [1, 3, 4]
    noise = torch.empty(6).exponential_(generator=torch.Generator().manual_seed(1))
    assert len(set(select_by_loss(losses, 4, 0.5, noise).tolist())) == 4


def test_a_selective_epoch_runs_the_forwards_its_flops_count_and_reads_nothing_back():
    """40 images, batch 8, keep 0.5: candidates of 16, 16 and 8, of which 8, 8 and 4 are trained;
    the step's figures (loss, accuracy, E/C) cover every candidate."""
    trainer = tiny_trainer()
    log = ForwardLog(trainer.model)
    everything = torch.arange(len(trainer.train_set))
    for update in (DENSE, SEL):
        log.calls.clear()
        with SyncCounter() as counter:
            sums = trainer.train_epoch(everything, update, gamma=1e-4, keep=0.5)
        assert counter.count == 0, update
        assert log.images(trained=False) == [16, 16, 8]
        assert log.images(trained=True) == [8, 8, 4]
    figures = unpack_sums(sums.tolist(), trainer.n_classes)
    assert figures["loss"] > 0  # summed over the 40 candidates, so `loss / images` is their mean
    assert 0 < sum(figures["E"]) and 0 <= figures["correct"] <= 40


def test_the_run_records_the_executed_flops_of_the_forwards_it_ran():
    trainer = tiny_trainer()
    train, evaluation = flops_per_image(trainer.model)
    phases = [Phase("dense", 1, np.arange(40), 0, keep=0.5)]
    run = ExperimentRun("selective", trainer, phases, [str(c) for c in range(10)], out=None)
    run.run()
    summary = run.summary()
    by_hand = 40 * evaluation + 20 * train  # 40 candidates forwarded, 20 trained
    assert summary["compute/flops_executed_T"] * 1e12 == pytest.approx(by_hand, rel=1e-12)
    assert summary["compute/flops_executed_T"] * 1e12 < 40 * train  # below a dense epoch's



def test_the_knob_reaches_every_phase_of_its_recipe_and_stays_out_of_sel():
    params = Params()
    dense = params.experiments["selective_50"]
    assert [(p.epochs, p.keep) for p in plan(dense, params, 100)] == [(30, 0.5)]
    assert not dense.reads_sel and "selective_25" in params.train_stages.dense
    curriculum = Experiment(recipe="curriculum", warmup_epochs=1, warmup_per_class=2, selective_keep=0.25)
    pools = Pools.shuffled(np.arange(100) % 10, 10, seed=0)
    phases = plan(curriculum, params, 100, pools, gamma=1e-4)
    assert [p.keep for p in phases] == [0.25] * 6  # the warm-up and the five stages
    assert [p.keep for p in plan(params.experiments["sel95"], params, 100, pools, 1e-4)] == [None] * 5
