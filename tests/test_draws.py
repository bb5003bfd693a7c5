"""The two methods that draw each epoch's images (issue 22): the E-driven class draw (each class's
share follows its running embarrassment, a fixed count, drawn on the device) and InfoBatch
(low-loss images left out at random, the kept ones' loss scaled so the gradient keeps its
expectation, the last epochs whole); their executed FLOPs count the images trained and no more."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import ROOT, refused
from sel.config.params import parse_params
from sel.core.errors import SelError
from sel.experiments.plan import ExperimentRun, Phase, executed_images, plan
from sel.method.class_draw import class_shares, draw_by_class, drawn_count
from sel.method.flops import flops_per_image
from sel.method.infobatch import prune_well_learned, pruned_epochs
from sel.speed.bench import SyncCounter
from sel.train.training import DENSE, Rule, unpack_sums
from test_selective import ForwardLog, tiny_trainer

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
CLASSES = [str(c) for c in range(10)]


def test_class_shares_by_hand():
    shares = class_shares(torch.tensor([2.0, 1.0, 1.0, 0.0]), floor=0.5)
    # floor / C + (1 - floor) * E / sum(E): 0.125 + 0.5 * [0.5, 0.25, 0.25, 0]
    assert shares.tolist() == pytest.approx([0.375, 0.25, 0.25, 0.125])
    assert class_shares(torch.zeros(4), 0.5).tolist() == pytest.approx([0.25] * 4)  # nothing to follow
    assert class_shares(torch.tensor([5.0, 1.0]), 1.0).tolist() == pytest.approx([0.5, 0.5])  # floor 1: uniform


def test_the_draw_gives_each_class_its_quota_and_passes_on_what_a_class_lacks():
    labels = torch.arange(1000) % 4  # 250 images per class
    indices = torch.arange(1000) + 5000  # the training set's numbers, not positions
    generator = torch.Generator().manual_seed(0)
    drawn = draw_by_class(indices, labels, torch.tensor([0.4, 0.3, 0.2, 0.1]), 500, generator)
    assert len(drawn) == len(set(drawn.tolist())) == 500 and drawn.min() >= 5000
    per_class = torch.bincount((drawn - 5000) % 4, minlength=4).tolist()
    assert per_class == pytest.approx([200, 150, 100, 50], abs=1)
    # class 0's quota (350) exceeds its 250 images: all of them, the other 250 split evenly
    drawn = draw_by_class(indices, labels, torch.tensor([0.7, 0.1, 0.1, 0.1]), 500, generator)
    assert torch.bincount((drawn - 5000) % 4, minlength=4).tolist() == pytest.approx([250, 83, 83, 83], abs=1)


def test_a_class_draw_epoch_trains_its_fixed_count_follows_e_and_reads_nothing_back():
    """40 images, keep 0.5: 20 drawn, in steps of 8, 8 and 4; the class the running E calls most
    embarrassing gets the most images, and the epoch's E becomes the next draw's."""
    trainer = tiny_trainer()
    log = ForwardLog(trainer.model)
    everything = torch.arange(len(trainer.train_set))
    trainer.class_e.copy_(torch.tensor([9.0] + [1.0] * 9))
    with SyncCounter() as counter:
        drawn = trainer.draw_by_embarrassment(everything, 0.5, floor=0.5)
        sums = trainer.train_epoch(drawn)
    assert counter.count == 0
    assert len(drawn) == drawn_count(40, 0.5) == 20 and log.images(trained=True) == [8, 8, 4]
    per_class = torch.bincount(trainer.train_set.y[drawn], minlength=10)
    assert per_class[0] == 4 and per_class.sum() == 20  # share 0.05 + 0.5 * 0.5 = 0.3: 6, capped at its 4
    figures = unpack_sums(sums.tolist(), trainer.n_classes)
    assert trainer.class_e.tolist() == pytest.approx([e / 3 for e in figures["E"]])  # three steps


def test_the_class_draw_plans_and_counts_the_images_it_trains():
    params = parse_params(RAW)
    spec = params.experiments["class_draw_50"]
    (phase,) = plan(spec, params, 400, counts=np.full(10, 40))
    assert (phase.draw, phase.draw_floor, phase.images()) == (0.5, 0.5, 200)
    assert executed_images([phase]) == 30 * 200
    # its budget-matched dense run trains as many images, on every image, whole epochs first
    dense = plan(params.experiments["dense_at_class_draw_50"], params, 400, counts=np.full(10, 40), seed=1)
    assert [(p.epochs, len(p.indices)) for p in dense] == [(15, 400)] and dense[0].lr_decay_steps
    trainer = tiny_trainer()
    train, _ = flops_per_image(trainer.model)
    run = ExperimentRun("draw", trainer, [Phase("dense", 2, np.arange(40), 0, draw=0.25, draw_floor=0.5)],
                        CLASSES, out=None)
    run.run()
    assert run.summary()["compute/flops_executed_T"] * 1e12 == pytest.approx(2 * 10 * train, rel=1e-12)


def test_infobatch_keeps_the_losss_expectation():
    """A known loss vector (mean 1.5): the three below the mean are left out with chance 0.5 and
    weigh 2 when kept; over many draws the weighted sum of the kept losses is the full sum."""
    scores = torch.tensor([0.5, 1.0, 0.5, 1.5, 3.0, 2.5])
    indices = torch.arange(6)
    generator = torch.Generator().manual_seed(0)
    total, kept_low, n = 0.0, 0, 20_000
    for _ in range(n):
        kept, weights = prune_well_learned(indices, scores, 0.5, generator)
        total += float((scores[kept] * weights).sum())
        kept_low += int((kept < 3).sum())
        assert {3, 4, 5} <= set(kept.tolist())  # at or above the mean: never left out
        assert weights.tolist() == [2.0 if i < 3 else 1.0 for i in kept.tolist()]
    assert total / n == pytest.approx(float(scores.sum()), rel=0.01)
    assert kept_low / n == pytest.approx(1.5, rel=0.02)


def test_an_infobatch_epoch_weights_the_loss_sets_the_scores_and_counts_what_it_trained():
    trainer = tiny_trainer()
    everything = torch.arange(len(trainer.train_set))
    trainer.scores.copy_(torch.linspace(0, 2, 40))  # the first 20 below the mean
    kept = trainer.prune_by_loss(everything, 0.5)
    assert 20 <= len(kept) < 40 and set(range(20, 40)) <= set(kept.tolist())
    assert set(trainer.image_weight[kept].unique().tolist()) == {1.0, 2.0}
    log = ForwardLog(trainer.model)
    with SyncCounter() as counter:
        trainer.train_epoch(kept, weighted=True)
    assert counter.count == 0 and sum(log.images(trained=True)) == len(kept)
    scores = trainer.scores.clone()
    assert not torch.equal(scores[kept], torch.linspace(0, 2, 40)[kept])  # each kept image's loss now
    left_out = sorted(set(range(40)) - set(kept.tolist()))
    assert torch.equal(scores[left_out], torch.linspace(0, 2, 40)[left_out])


def test_a_weighted_step_is_the_weighted_mean_of_the_images_losses():
    """Weights 1 everywhere: the same epoch as the unweighted one. One image at weight 3: the step
    is Adam's on mean(weight * loss), computed here by hand, and each image's score is its loss."""
    plain, weighted = tiny_trainer(batch_size=40), tiny_trainer(batch_size=40)
    everything = torch.arange(40)
    plain.train_epoch(everything)
    weighted.train_epoch(everything, weighted=True)
    for a, b in zip(plain.model.parameters(), weighted.model.parameters()):
        torch.testing.assert_close(a, b)
    trainer = tiny_trainer(batch_size=40)
    hand = copy.deepcopy(trainer.model)
    x, y = trainer.train_set.plain(everything), trainer.train_set.y[everything]
    trainer.image_weight[5] = 3.0
    trainer.batch_ids.copy_(everything)
    trainer._step(x, y, Rule(DENSE, True, 0.0, None, None, None, weighted=True))
    losses = F.cross_entropy(hand(x), y, reduction="none")
    (losses * trainer.image_weight).mean().backward()
    optimizer = torch.optim.Adam(hand.parameters(), lr=1e-3)
    optimizer.step()
    for a, b in zip(trainer.model.parameters(), hand.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(trainer.scores, losses.detach(), rtol=1e-4, atol=1e-6)


def test_infobatch_plans_pruned_epochs_then_whole_ones():
    assert [pruned_epochs(e) for e in (30, 8, 6, 1, 0)] == [27, 7, 5, 0, 0]
    params = parse_params(RAW)
    phases = plan(params.experiments["infobatch_r50"], params, 400, counts=np.full(10, 40))
    assert [(p.name, p.epochs, p.prune_ratio) for p in phases] == [("infobatch", 27, 0.5), ("anneal", 3, None)]


def test_an_infobatch_run_counts_the_images_it_trained_and_resumes_with_its_scores():
    """Two epochs at once, or one, a checkpoint's state into a fresh run, then the other: the same
    weights (the scores the second epoch prunes by are in the state) and the executed FLOPs of
    the images each epoch kept."""
    def run_of(trainer):
        return ExperimentRun("ib", trainer, [Phase("infobatch", 2, np.arange(40), 0, prune_ratio=0.5),
                                             Phase("anneal", 1, np.arange(40), 0)], CLASSES, out=None)
    whole = run_of(tiny_trainer())
    whole.run()
    first = run_of(tiny_trainer())
    first.step()
    state = copy.deepcopy(first.state_dict())
    resumed = run_of(tiny_trainer())
    resumed.load_state_dict(state)
    resumed.run()
    for a, b in zip(whole.trainer.model.parameters(), resumed.trainer.model.parameters()):
        assert torch.equal(a, b)
    train, _ = flops_per_image(whole.trainer.model)
    trained = [row["compute/flops_executed_T"] * 1e12 / train for row in whole.rows]
    assert trained[0] == pytest.approx(40)  # every score equal at first: nothing below the mean
    assert 20 <= trained[1] - trained[0] < 40 and trained[2] - trained[1] == pytest.approx(40)


def test_infobatchs_linear_lr_spans_its_epochs_each_spread_over_the_steps_it_turned_out_to_have():
    """As InfoBatch's code: epoch e of E starts its line at e / E and spreads 1 / E over its own
    steps, however many pruning left it; the last step of the run runs at the last sliver."""
    params = parse_params(RAW)
    phases = plan(params.experiments["infobatch_r50"], params, 40, counts=np.full(10, 4))
    assert {p.lr_decay_epochs for p in phases} == {30} and {p.lr_decay_steps for p in phases} == {None}
    run = ExperimentRun("ib", tiny_trainer(), phases, CLASSES, out=None)
    run.done = 10
    assert run.lr_line(phases[0], 3) == pytest.approx((10 / 30, 1 / (30 * 3)))
    run.done = 29
    start, slope = run.lr_line(phases[1], 5)
    assert start + 5 * slope == pytest.approx(1.0)  # the line ends with the run


@pytest.mark.parametrize("experiment, message", [
    ({"class_draw": 0}, "experiments.x.class_draw = 0: must be in (0, 1]"),
    ({"class_draw": 0.5, "class_draw_floor": 0}, "experiments.x.class_draw_floor = 0: must be in (0, 1]"),
    ({"infobatch_prune": 1.0}, "experiments.x.infobatch_prune = 1.0: must be in (0, 1)"),
    ({"class_draw": 0.5, "selective_keep": 0.5}, "experiments.x.class_draw = 0.5: one method per experiment"),
    ({"infobatch_prune": 0.5, "budget": 0.5}, "experiments.x.budget = 0.5: a method's run takes no budget"),
    ({"budget": "infobatch_r50"}, "experiments.x.lr_schedule = 'constant': a run whose budget is infobatch_r50's "
                                  "has its schedule (linear)"),
    ({"budget": "selective_50"}, "experiments.x.lr_schedule = 'constant': a run whose budget is selective_50's "
                                 "has its schedule (linear)"),
    ({"selective_keep": 0.5, "selective_start": 0.9}, "experiments.x.selective_start = 0.9: must be below "
                                                      "selective_end (0.9)"),
    ({"selective_keep": 0.5, "selective_start": 0.6, "selective_end": 0.3},
     "experiments.x.selective_start = 0.6: must be below selective_end (0.3)"),
    ({"selective_keep": 0.5, "selective_end": 1.5}, "experiments.x.selective_end = 1.5: must be between 0 and 1"),
    ({"selective_keep": 0.5, "selective_interrupt": 0}, "experiments.x.selective_interrupt = 0: must be >= 2"),
    ({"selective_keep": 0.5, "selective_interrupt": 1}, "experiments.x.selective_interrupt = 1: must be >= 2"),
    ({"selective_keep": 0.5, "selective_history": 0}, "experiments.x.selective_history = 0: must be >= 1"),
    ({"selective_start": 0.2}, "experiments.x.selective_start = 0.2: read only with selective_keep"),
    ({"recipe": "curriculum", "class_draw": 0.5}, "experiments.x.class_draw = 0.5: not read by recipe curriculum"),
])
def test_bad_method_knobs_name_the_key(experiment, message):
    raw = copy.deepcopy(RAW)
    raw["experiments"]["x"] = {"recipe": "dense", **experiment}
    with refused(message):
        parse_params(raw)


def test_a_twin_of_a_method_whose_images_follow_its_losses_is_sized_from_its_measured_run():
    """InfoBatch's executed FLOPs follow its losses: its twin is trained by train_measured, after
    a run of it, never from a plan; a twin of a method no stage trains is refused."""
    raw = copy.deepcopy(RAW)
    raw["train_stages"]["measured"].remove("infobatch_r70")
    raw["train_stages"]["budget"].append("dense_at_infobatch_r70")
    with pytest.raises(SelError, match=r"experiments.dense_at_infobatch_r70.budget = 'infobatch_r70': "
                                       r"infobatch_r70's images follow its losses.*train_stages.measured"):
        parse_params(raw)
    raw = copy.deepcopy(RAW)
    raw["train_stages"]["dense"].remove("infobatch_r70")
    with pytest.raises(SelError, match=r"train_stages.measured.1 = 'infobatch_r70': its twin is sized from its "
                                       r"measured run, and no stage trains it"):
        parse_params(raw)
    raw = copy.deepcopy(RAW)
    del raw["experiments"]["dense_at_infobatch_r70"]
    with pytest.raises(SelError, match=r"train_stages.measured.1 = 'infobatch_r70': needs experiment "
                                       r"dense_at_infobatch_r70"):
        parse_params(raw)
