"""How experiments are declared and planned: the original's four, the controls that take SEL
apart one factor at a time (each checked on tiny data against the run it controls), and the
statistics the aggregate reports over seeds, against hand-computed values."""

import copy

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, refused
from sel.method.curriculum import Pools, stage_gamma
from sel.experiments.plan import check_plan, needs_gamma, needs_pools, plan
from sel.config.params import Params, parse_params
from sel.report.summary import markdown, summarise
from sel.report.stats import binomial_se, describe, joint_level, paired
from sel.train.training import DENSE, MASKED, SEL

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
PARAMS = Params()
GAMMA = 1e-3


def labels(per_class=(20, 17, 23)) -> np.ndarray:
    """Uneven classes, interleaved, as a data set's labels."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    return np.random.default_rng(0).permutation(y)


def difficulty_pools(y) -> Pools:
    losses = np.random.default_rng(1).random(len(y))
    per_class = [np.flatnonzero(y == c) for c in range(3)]
    order = np.concatenate([idx[np.argsort(losses[idx])] for idx in per_class])
    return Pools(order, np.array([len(i) for i in per_class]))


def phases_of(name, y, params=PARAMS):
    spec = params.experiments[name]
    pools = difficulty_pools(y) if needs_pools(spec) else Pools.shuffled(y, 3, seed=42)
    return plan(spec, params, len(y), pools, GAMMA)


def test_the_original_four_are_planned_as_before():
    y = labels()
    (dense,) = phases_of("baseline", y)
    assert (dense.epochs, dense.update, dense.lr_loss_scale, len(dense.indices)) == (30, DENSE, 0.0, len(y))
    pre, re = phases_of("lottery", y)
    assert (pre.epochs, pre.recorded, re.epochs, re.update, re.prune_fraction) == (15, False, 30, MASKED, 0.8)
    stages = phases_of("sel95", y)
    assert [p.stage for p in stages] == [1, 2, 3, 4, 5] and all(p.update == SEL for p in stages)
    assert [p.gamma for p in stages] == [stage_gamma(GAMMA, s, 5, 0.3) for s in range(5)]
    assert all(p.lr_loss_scale == 2.0 and p.epochs == 10 for p in stages)
    warm, *rest = phases_of("warmup_sel", y)
    assert (warm.epochs, warm.update, warm.measure_ec, len(warm.indices)) == (5, DENSE, False, len(y))
    assert [(p.stage, len(p.indices)) for p in rest] == [(p.stage, len(p.indices)) for p in stages]


@pytest.mark.parametrize("control", ["sel_random_order", "random_subsets"])
def test_random_order_controls_train_on_windows_of_the_sizes_sel_trains_on(control):
    y = labels()
    sel, random = phases_of("sel95", y), phases_of(control, y)
    assert [(p.epochs, len(p.indices)) for p in random] == [(p.epochs, len(p.indices)) for p in sel]
    for r, s in zip(random, sel):
        # per class the same count, drawn from that class only, but other images
        assert np.array_equal(np.bincount(y[r.indices], minlength=3), np.bincount(y[s.indices], minlength=3))
        assert len(set(r.indices)) == len(r.indices)
    assert any(set(r.indices) != set(s.indices) for r, s in zip(random, sel))
    # the order is the seed's: the same seed, the same pools
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(random, phases_of(control, y)))
    assert not np.array_equal(Pools.shuffled(y, 3, 42).window(0, 0.25, 99), Pools.shuffled(y, 3, 43).window(0, 0.25, 99))


def test_each_control_removes_one_factor_of_sel95():
    y = labels()
    sel = phases_of("sel95", y)
    same_windows = lambda ps: all(np.array_equal(p.indices, s.indices) for p, s in zip(ps, sel))  # noqa: E731
    dense_grads = phases_of("sel_dense_grads", y)
    assert same_windows(dense_grads) and all(p.update == DENSE and p.lr_loss_scale == 2.0 for p in dense_grads)
    constant_lr = phases_of("sel_constant_lr", y)
    assert same_windows(constant_lr) and all(p.update == SEL and p.lr_loss_scale == 0.0 for p in constant_lr)
    assert [p.gamma for p in constant_lr] == [p.gamma for p in sel]
    subsets = phases_of("random_subsets", y)
    assert all(p.update == DENSE and p.lr_loss_scale == 0.0 for p in subsets)
    (masked,) = phases_of("baseline_masked", y)
    assert (masked.epochs, len(masked.indices), masked.update, masked.gamma, masked.lr_loss_scale) == \
        (30, len(y), SEL, GAMMA, 0.0)
    target = phases_of("sel95_target", y)
    assert all(p.update == SEL and p.gamma is None and p.target_sparsity == 0.95 for p in target)
    # what each reads from sort and calibrate
    spec = PARAMS.experiments
    assert [needs_pools(spec[n]) for n in ("sel95", "sel_random_order", "random_subsets", "baseline")] == \
        [True, False, False, False]
    assert [needs_gamma(spec[n], PARAMS) for n in ("sel95", "sel_dense_grads", "baseline_masked", "sel95_target")] == \
        [True, False, True, False]


def test_a_seed_gives_every_experiment_the_same_start_and_data_order():
    from builders import make_arrays
    from sel.data.dataset import Cifar
    from sel.experiments.plan import make_trainer

    data = Cifar(*make_arrays(2, 2))
    params = parse_params({**copy.deepcopy(RAW), "model": {"width": 4, "pretrained": False},
                           "data": {"held_out_per_class": 1}})
    first = {(n, s): make_trainer(params, data, params.experiments[n], s)
             for n in ("baseline", "sel95", "baseline_masked") for s in (42, 43)}
    for name in ("sel95", "baseline_masked"):
        for seed in (42, 43):
            a, b = first["baseline", seed], first[name, seed]
            assert all(torch.equal(a.initial_state[k], b.initial_state[k]) for k in a.initial_state)
            assert torch.equal(a.generator.get_state(), b.generator.get_state())
    a, b = first["baseline", 42], first["baseline", 43]
    assert not all(torch.equal(a.initial_state[k], b.initial_state[k]) for k in a.initial_state)


def test_a_users_variant_is_a_few_lines_of_params():
    raw = copy.deepcopy(RAW)
    raw["experiments"]["half_mask"] = {"recipe": "curriculum", "warmup_epochs": 2, "warmup_per_class": 3,
                                       "gamma_mode": "target"}
    raw["train_stages"]["sel"].append("half_mask")
    raw["sel"]["target_sparsity"] = 0.5
    params = parse_params(raw)
    warm, *stages = phases_of("half_mask", labels(), params)
    assert warm.epochs == 2 and all(p.target_sparsity == 0.5 and p.lr_loss_scale == 2.0 for p in stages)


def test_a_stage_group_may_be_empty():
    raw = copy.deepcopy(RAW)
    raw["train_stages"]["budget"] = []
    assert parse_params(raw).train_stages.budget == ()


@pytest.mark.parametrize("change, message", [
    (lambda r: r["experiments"].update(mine={"epochs": 3}), "experiments.mine.recipe"),
    (lambda r: r["experiments"]["baseline"].update(order="random"), "experiments.baseline.order = 'random': not read by recipe dense"),
    (lambda r: r["experiments"]["sel95"].update(prune_fraction=0.5), "experiments.sel95.prune_fraction"),
    (lambda r: r["experiments"]["sel95"].update(recipe="sparse"), "must be one of dense | lottery | curriculum"),
    (lambda r: r["train_stages"]["dense"].append("sel95"), "list it under train_stages.sel"),
    (lambda r: r["train_stages"]["sel"].append("baseline"), "listed twice"),
    (lambda r: r["train_stages"]["sel"].append("nope"), "train_stages.sel.8 = 'nope': no such experiment"),
    (lambda r: r["attribution"].update(x=["sel95"]), "attribution.x"),
    (lambda r: r["attribution"].update(x=["sel95", "nope"]), "'nope' is not an experiment"),
    (lambda r: r.update(seeds=[42, 42]), "seeds = [42, 42]: must be distinct"),
    (lambda r: r.update(seeds=[]), "seeds = []: must be a non-empty list"),
    (lambda r: r.update(train_stages={"dense": [], "sel": [], "budget": [], "measured": []}), "train_stages = {"),
    (lambda r: r.update(train_stages={"dense": [], "sel": [], "budget": [], "measured": []}), "lists no experiment"),
    (lambda r: r["sel"].update(target_sparsity=1.0), "sel.target_sparsity = 1.0: must be in (0, 1)"),
    (lambda r: r["sel"].update(gamma_mode="adaptive"), "calibrated | target"),
])
def test_bad_experiment_declarations_name_the_key(change, message):
    raw = copy.deepcopy(RAW)
    change(raw)
    with refused(message):
        parse_params(raw)


# --- statistics over seeds ------------------------------------------------------------------------

def test_describe_is_the_student_t_interval():
    d = describe([1.0, 2.0, 3.0, 4.0])
    # by hand: mean 2.5, sd sqrt(5/3) = 1.2909944, t(0.975, 3) = 3.1824463, half = t sd / 2
    assert d["mean"] == 2.5 and d["n"] == 4
    assert d["sd"] == pytest.approx(1.2909944, abs=1e-7)
    assert d["ci_high"] - d["mean"] == pytest.approx(3.1824463 * 1.2909944 / 2, abs=1e-6)
    assert d["mean"] - d["ci_low"] == pytest.approx(2.0542603, abs=1e-6)
    one = describe([0.7])
    assert one == {"mean": 0.7, "sd": None, "n": 1, "ci_low": None, "ci_high": None}


def test_paired_difference_uses_the_shared_seeds_only():
    a = {42: 0.50, 43: 0.60, 44: 0.55, 45: 0.9}
    b = {42: 0.70, 43: 0.72, 44: 0.74}
    d = paired(a, b)
    # differences -0.20, -0.12, -0.19: mean -0.17, sd 0.0435890, t(0.975, 2) = 4.3026527
    assert d["seeds"] == [42, 43, 44] and d["n"] == 3
    assert d["mean"] == pytest.approx(-0.17)
    assert d["sd"] == pytest.approx(0.0435890, abs=1e-7)
    assert d["ci_high"] == pytest.approx(-0.17 + 4.3026527 * 0.0435890 / 3 ** 0.5, abs=1e-6)
    assert paired({1: 0.1}, {2: 0.2}) is None


def test_summary_statistics_and_attribution_rows():
    def run(acc, proxy):
        return {"acc/test_full": acc, "acc/test_100": acc, "compute/flops_proxy_T": proxy,
                "compute/flops_executed_T": 10.0, "compute/time_s": 1.0, "sparsity/sparsity": 0.0,
                "sparsity/params_changed": 1.0}
    summaries = {"baseline": {42: run(0.70, 4.0), 43: run(0.72, 4.0)},
                 "sel95": {42: run(0.50, 1.0), 43: run(0.60, 2.0)},
                 "random_subsets": {42: run(0.55, 1.0), 43: run(0.61, 1.0)}}
    out = summarise(summaries, {"total": ("sel95", "baseline"), "fewer_images": ("random_subsets", "baseline")})
    sel = next(e for e in out["experiments"] if e["experiment"] == "sel95")
    assert sel["metrics"]["acc/test_full"]["mean"] == pytest.approx(0.55)
    # saved % against the same seed's baseline: 75% and 50%
    assert sel["metrics"]["compute/saved_proxy_pct"]["values"] == {42: 75.0, 43: 50.0}
    assert sel["vs_baseline"]["acc/test_full"]["mean"] == pytest.approx(-0.16)  # (-0.20 - 0.12) / 2
    # two seeds: half-width = t(0.975, 1) * sd / sqrt(2) = 12.7062047 * |d1 - d2| / 2
    total, fewer = out["attribution"]
    assert total["factor"] == "total" and total["acc/test_full"]["ci_high"] - total["acc/test_full"]["mean"] == \
        pytest.approx(12.7062047 * 0.08 / 2, abs=1e-6)
    assert fewer["acc/test_full"]["mean"] == pytest.approx(-0.13)  # (-0.15 - 0.11) / 2
    assert out["seeds"] == [42, 43]


def test_what_an_interval_leaves_out_is_sized():
    assert joint_level(12) == pytest.approx(0.99583, abs=1e-5)  # 99.6%: twelve at 95% jointly
    assert joint_level(1) == pytest.approx(0.95)
    assert binomial_se(0.5, 1000) == pytest.approx(0.0158114, abs=1e-7)  # 1.6 points
    assert binomial_se(0.9, 10_000) == pytest.approx(0.003)


def test_summary_md_says_what_its_intervals_cover_and_which_schedules_they_pair():
    def run(acc):
        return {"acc/test_full": acc, "acc/test_100": acc}
    summaries = {"baseline": {42: run(0.50), 43: run(0.52)}, "baseline_linear": {42: run(0.53), 43: run(0.52)},
                 "sel95": {42: run(0.30), 43: run(0.36)}}
    attribution = {"linear_lr": ("baseline_linear", "baseline"), "total": ("sel95", "baseline")}
    schedules = {"baseline": "constant", "baseline_linear": "linear", "sel95": "constant"}
    out = summarise(summaries, attribution, schedules=schedules, n_test=1000)
    assert out["attribution"][0]["schedules"] == ["linear", "constant"] and out["n_test"] == 1000
    md = markdown(out, "note", held_out_is_test_set=True)
    paired_table, attribution_table = md.split("## Where SEL's accuracy goes")
    # two rows with an interval in each table: 97.5% each for both to hold at 95%
    for table in (paired_table, attribution_table):
        assert "2 comparisons with an interval" in table and "97.5% to hold jointly" in table
        assert "ignore the sampling of the test images" in table
        # at the baseline's 51%: sqrt(0.51 * 0.49 / 1000) = 1.58%
        assert "a single run's accuracy on 1,000 test images has a binomial s.e. of 1.6 points" in table
        assert "compares schedules as well as methods" in table
    assert "| linear lr ‡ | baseline_linear | Baseline |" in attribution_table
    assert attribution_table.count("| linear / constant |") == 1
    assert "| total | SEL-95 | Baseline |" in attribution_table and "| constant / constant |" in attribution_table
    assert "| baseline_linear ‡ |" in paired_table and "| SEL-95 |" in paired_table
    # without schedules (runs summarised before) the tables keep their columns and no footnote
    plain = markdown(summarise(summaries, attribution), "note", held_out_is_test_set=True)
    assert "Schedules" not in plain and "‡" not in plain and "binomial" not in plain
    assert "2 comparisons with an interval" in plain


def test_a_phase_of_no_more_images_than_a_batch_is_warned_about(capsys):
    y = labels()
    phases = phases_of("sel95", y)
    check_plan("sel95", PARAMS.experiments["sel95"], phases, difficulty_pools(y), batch_size=10_000)
    warned = capsys.readouterr().err.strip().splitlines()
    assert len(warned) == len(phases) and all("one optimizer step per epoch" in w for w in warned)
    check_plan("sel95", PARAMS.experiments["sel95"], phases, difficulty_pools(y), batch_size=4)
    assert capsys.readouterr().err == ""
