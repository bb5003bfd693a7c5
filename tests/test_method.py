"""The method's core math, checked on hand-made tensors against the formulas of DESIGN.md.

E/C, the SEL gradient mask, the stage windows and gamma decay, the global magnitude prune and
the lottery rewind, the augmentation against torchvision, the Trainer's per-batch learning rate,
sparsity and evaluation, determinism, calibration, sorting and the FLOPs figures.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn

from builders import make_arrays
from sel.data.augment import MEAN, STD, Images
from sel.scoring.calibration import calibrate_gamma
from sel.method.curriculum import Pools, epoch_order, stage_gamma
from sel.data.dataset import Cifar, held_out_indices
from sel.train.device import memory_format
from sel.method.embarrassment import class_embarrassment
from sel.method.flops import flops_per_image, proxy_flops
from sel.config.params import ModelParams
from sel.train.model import ResNet18, fresh_model, n_params, resnet18
from sel.method.prune import global_magnitude_mask, magnitude_threshold
from sel.scoring.sorting import difficulty_order
from sel.method.sparsity import FlatGrads
from sel.speed.bench import SyncCounter
from sel.train.training import Trainer, unpack_sums

CPU = torch.device("cpu")


def tiny_data(train_per_class=4, test_per_class=3, seed=0) -> Cifar:
    return Cifar(*make_arrays(train_per_class, test_per_class, seed=seed))


def tiny_trainer(seed=0, width=4, data=None, batch_size=64, eval_batch_size=256, held_per_class=2,
                 lr=1e-3) -> Trainer:
    data = data or tiny_data()
    model = fresh_model(seed, ModelParams(width=width, pretrained=False), len(data.classes))
    held = held_out_indices(data.y_test, held_per_class, len(data.classes))
    return Trainer(model, data, held, device=CPU, precision="fp32", lr=lr, batch_size=batch_size,
                   eval_batch_size=eval_batch_size, seed=seed)


# --- 1. embarrassment and confidence -------------------------------------------------------------

def explicit_ec(logits, labels, n_classes, temperature):
    """The definition, one image and one class at a time, in Python floats."""
    e, c = [], []
    for cls in range(n_classes):
        losses = []
        for row, y in zip(logits.tolist(), labels.tolist()):
            if y != cls:
                continue
            z = [v / temperature for v in row]
            m = max(z)
            log_sum = m + math.log(sum(math.exp(v - m) for v in z))
            losses.append(log_sum - z[y])
        if losses:
            mean = sum(losses) / len(losses)
            e.append(mean)
            c.append(max(0.0, 1.0 - mean))
        else:
            e.append(0.0)
            c.append(0.0)
    return e, c


def test_embarrassment_and_confidence_per_class():
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0],    # class 0, confidently right
                           [3.0, 1.0, 0.0, -1.0],   # class 0, right
                           [5.0, 0.0, -2.0, 0.0],   # class 2, confidently wrong: E > 1
                           [6.0, 1.0, 0.0, 0.0],    # class 2, wrong
                           [0.5, 0.2, 0.1, 0.0],    # class 3, unsure
                           [0.0, 0.0, 0.0, 2.5]])   # class 3, right
    labels = torch.tensor([0, 0, 2, 2, 3, 3])       # class 1 absent
    e, c = class_embarrassment(logits, labels, 4, 1.5)
    e_ref, c_ref = explicit_ec(logits, labels, 4, 1.5)
    assert e.shape == c.shape == (4,)
    assert e.tolist() == pytest.approx(e_ref, abs=1e-6)
    assert c.tolist() == pytest.approx(c_ref, abs=1e-6)
    # the absent class: exactly 0 / 0
    assert e[1].item() == 0.0 and c[1].item() == 0.0
    # class 2 is embarrassing (E > 1) and its confidence is clipped to exactly 0
    assert e[2].item() > 1 and c[2].item() == 0.0
    # class 0 is confident: C = 1 - E, strictly inside (0, 1)
    assert 0 < c[0].item() < 1 and c[0].item() == pytest.approx(1 - e[0].item(), abs=1e-6)
    # the temperature is applied: T = 1 gives other values, and those match the definition too
    e1, c1 = class_embarrassment(logits, labels, 4, 1.0)
    e1_ref, c1_ref = explicit_ec(logits, labels, 4, 1.0)
    assert e1.tolist() == pytest.approx(e1_ref, abs=1e-6)
    assert c1.tolist() == pytest.approx(c1_ref, abs=1e-6)
    assert abs(e1[0].item() - e[0].item()) > 1e-2 and abs(e1[2].item() - e[2].item()) > 1e-1


def test_embarrassment_matches_functional_cross_entropy_on_random_batch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 10, generator=g) * 3
    labels = torch.randint(0, 7, (64,), generator=g)  # classes 7..9 absent
    e, c = class_embarrassment(logits, labels, 10, 1.5)
    per_image = F.cross_entropy(logits / 1.5, labels, reduction="none")
    for cls in range(10):
        sel = labels == cls
        if sel.any():
            assert e[cls].item() == pytest.approx(per_image[sel].mean().item(), abs=1e-5)
            assert c[cls].item() == pytest.approx(max(0.0, 1 - per_image[sel].mean().item()), abs=1e-5)
        else:
            assert e[cls].item() == 0.0 and c[cls].item() == 0.0


# --- 2. the SEL mask -----------------------------------------------------------------------------

def test_flat_grads_layout_and_mask_strictly_above_gamma():
    gamma = 0.5
    above = float(np.nextafter(np.float32(gamma), np.float32(1)))
    below = float(np.nextafter(np.float32(gamma), np.float32(0)))
    conv = nn.Parameter(torch.zeros(2, 3, 2, 2).contiguous(memory_format=torch.channels_last))
    bias = nn.Parameter(torch.zeros(5))
    fc = nn.Parameter(torch.zeros(3, 4))
    params = [conv, bias, fc]
    grads = FlatGrads(params)
    assert grads.numel == 24 + 5 + 12 == grads.flat.numel()

    # each .grad is a view of the flat buffer with its parameter's strides
    for p in params:
        assert p.grad.shape == p.shape and p.grad.stride() == p.stride()
    assert conv.grad.is_contiguous(memory_format=torch.channels_last)
    assert not conv.grad.is_contiguous()
    conv.grad[1, 2, 0, 1] = 7.0
    # channels_last: (n, c, h, w) lives at n*12 + h*6 + w*3 + c of the parameter's segment
    assert grads.flat[1 * 12 + 0 * 6 + 1 * 3 + 2].item() == 7.0
    bias.grad[3] = 8.0
    assert grads.flat[24 + 3].item() == 8.0
    fc.grad[2, 1] = 9.0
    assert grads.flat[29 + 2 * 4 + 1].item() == 9.0
    grads.zero()
    assert all((p.grad == 0).all() for p in params)

    # hand-set gradients around gamma, through the views
    conv.grad[0, 0, 0, 0] = gamma           # == gamma: zeroed
    conv.grad[0, 1, 1, 1] = -gamma          # |g| == gamma: zeroed
    conv.grad[1, 2, 1, 0] = above           # just above: kept
    conv.grad[1, 0, 0, 1] = -above          # kept
    bias.grad[0] = below                    # just below: zeroed
    bias.grad[4] = 3.0                      # kept
    fc.grad[0, 0] = -below                  # zeroed
    fc.grad[2, 3] = -1.0                    # kept
    fc.grad[1, 2] = 1e-8                    # zeroed
    expected = [(conv, (1, 2, 1, 0), above), (conv, (1, 0, 0, 1), -above),
                (bias, (4,), 3.0), (fc, (2, 3), -1.0)]
    sparsity = grads.mask_small(gamma)
    assert isinstance(sparsity, torch.Tensor)
    assert sparsity.item() == pytest.approx(1 - 4 / 41, abs=1e-6)
    assert int((grads.flat != 0).sum()) == 4
    for p, index, value in expected:  # the parameters' .grad see the masking
        assert p.grad[index].item() == value
    assert all(int((p.grad != 0).sum()) == n for p, n in ((conv, 2), (bias, 1), (fc, 1)))

    # gamma = 0: only exact zeros count as zeroed
    grads.zero()
    grads.flat[:10] = 0.25
    assert grads.mask_small(0.0).item() == pytest.approx(31 / 41, abs=1e-6)


def test_backward_accumulates_into_the_flat_buffer():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).to(memory_format=torch.channels_last)
    fc = nn.Linear(4, 2)
    params = list(conv.parameters()) + list(fc.parameters())
    grads = FlatGrads(params)
    views = [p.grad for p in params]
    x = torch.randn(5, 3, 6, 6).contiguous(memory_format=torch.channels_last)

    def loss_fn():
        return fc(F.relu(conv(x)).mean((2, 3))).square().sum()

    ref = torch.autograd.grad(loss_fn(), params)
    loss_fn().backward()
    for p, v, r in zip(params, views, ref):
        assert p.grad is v or p.grad.data_ptr() == v.data_ptr()  # still the view, not a new tensor
        assert p.grad.stride() == p.stride()
        torch.testing.assert_close(p.grad, r)
    # the flat buffer holds exactly those gradients, in the parameters' memory order
    flat_ref = torch.cat([r.permute(0, 2, 3, 1).flatten() if r.dim() == 4 else r.flatten() for r in ref])
    torch.testing.assert_close(grads.flat, flat_ref)
    # a second backward accumulates into the same buffer
    loss_fn().backward()
    torch.testing.assert_close(grads.flat, 2 * flat_ref)
    # masking the buffer is seen by every parameter's .grad
    gamma = float(grads.flat.abs().median())
    frac = grads.mask_small(gamma)
    kept = (2 * flat_ref).abs() > gamma
    assert frac.item() == pytest.approx(1 - kept.float().mean().item(), abs=1e-6)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.grad, torch.where((2 * r).abs() > gamma, 2 * r, 0.0))


# --- 3. stage windows and gamma decay ------------------------------------------------------------

DEFAULT_STAGES = [(0.00, 0.25), (0.20, 0.50), (0.40, 0.65), (0.60, 0.82), (0.78, 1.00)]


def hand_pools():
    c0 = [105, 101, 109, 100, 104, 108, 102, 107, 103, 106]  # 10 images, easy to hard
    c1 = [203, 200, 206, 201, 205, 202, 204]                 # 7 images
    return Pools(np.array(c0 + c1), np.array([10, 7])), c0, c1


def test_stage_windows_with_uneven_classes():
    pools, c0, c1 = hand_pools()
    # by hand: class 0 (n=10) and class 1 (n=7), [int(start*n), min(int(end*n), lo+cap))
    expected = [c0[0:2] + c1[0:1],    # easy:    10: 0..int(2.5)=2    7: 0..int(1.75)=1
                c0[2:5] + c1[1:3],    # medium:  10: 2..5             7: int(1.4)=1..int(3.5)=3
                c0[4:6] + c1[2:4],    # hard:    10: 4..int(6.5)=6    7: int(2.8)=2..int(4.55)=4
                c0[6:8] + c1[4:5],    # harder:  10: 6..int(8.2)=8    7: int(4.2)=4..int(5.74)=5
                c0[7:10] + c1[5:7]]   # hardest: 10: int(7.8)=7..10   7: int(5.46)=5..7
    for (start, end), want in zip(DEFAULT_STAGES, expected):
        assert pools.window(start, end, 2000).tolist() == want
    # the cap counts from the window's start, per class
    assert pools.window(0.78, 1.00, 2).tolist() == c0[7:9] + c1[5:7]
    assert pools.window(0.20, 0.50, 1).tolist() == c0[2:3] + c1[1:2]
    assert pools.window(0.0, 1.0, 3).tolist() == c0[0:3] + c1[0:3]
    assert pools.window(0.0, 1.0, 2000).tolist() == c0 + c1
    # warm-up: the first k of each class
    assert pools.easiest(3).tolist() == c0[:3] + c1[:3]
    assert pools.easiest(7).tolist() == c0[:7] + c1


def test_stage_gamma_decay_for_five_stages():
    gamma = 2.5e-4
    got = [stage_gamma(gamma, s, 5, 0.3) for s in range(5)]
    assert got == pytest.approx([gamma * f for f in (1.00, 0.94, 0.88, 0.82, 0.76)], rel=1e-12)
    assert stage_gamma(gamma, 3, 5, 0.0) == gamma
    assert stage_gamma(1.0, 2, 4, 0.5) == pytest.approx(0.75)


def test_epoch_order_is_a_permutation():
    idx = torch.tensor([5, 9, 2, 7, 11, 3])
    g = torch.Generator().manual_seed(0)
    a, b = epoch_order(idx, g), epoch_order(idx, g)
    assert sorted(a.tolist()) == sorted(b.tolist()) == sorted(idx.tolist())
    assert a.tolist() != b.tolist()  # reshuffled every call


# --- 4. global magnitude prune and the lottery rewind --------------------------------------------

def hand_model():
    """14 parameters: conv weight (2) and bias (2), BatchNorm weight (2) and bias (2), fc (4 + 2)."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 2))
    conv, bn, _, fc = model
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-1.0, 13.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([5.0, -2.0]))
        bn.weight.copy_(torch.tensor([14.0, 5.0]))       # BatchNorm holds the largest magnitude
        bn.bias.copy_(torch.tensor([-12.0, 3.0]))
        fc.weight.copy_(torch.tensor([[-5.0, 9.0], [4.0, 10.0]]))
        fc.bias.copy_(torch.tensor([-5.0, 11.0]))
    return model


def test_global_magnitude_mask_on_hand_set_weights():
    model = hand_model()
    params = list(model.parameters())
    grads = FlatGrads(params)
    # sorted |w|: 1 2 3 4 5 5 5 5 9 10 11 12 13 14; p50 = (5 + 5) / 2 = 5: every 5 is pruned (strict)
    assert magnitude_threshold(params, 0.5) == 5.0
    mask = global_magnitude_mask(grads, 0.5)
    expected = [[0, 1], [0, 0], [1, 0], [1, 0], [[0, 1], [0, 1]], [0, 1]]
    for view, want, p in zip(mask.views, expected, params):
        assert view.reshape(-1).tolist() == torch.tensor(want, dtype=view.dtype).reshape(-1).tolist()
        assert view.shape == p.shape
    assert mask.sparsity == pytest.approx(8 / 14)
    # BatchNorm and biases take part: without them p50 would be (5 + 9) / 2 = 7 over the 6 others
    others = np.abs(np.array([-1, 13, -5, 9, 4, 10], dtype=np.float32))
    assert np.percentile(others, 50) != 5.0

    # p80: index 0.8 * 13 = 10.4 -> 11 + 0.4 * (12 - 11) = 11.4 (linear), survivors 12, 13, 14
    assert magnitude_threshold(params, 0.8) == pytest.approx(11.4, abs=1e-6)
    assert magnitude_threshold(params, 0.75) == pytest.approx(10.75, abs=1e-6)  # 10 + 0.75 * (11 - 10)
    mask = global_magnitude_mask(grads, 0.8)
    flat_w = torch.cat([p.detach().flatten() for p in params])
    assert torch.cat([v.flatten() for v in mask.views]).tolist() == (flat_w.abs() > 11.4).float().tolist()
    assert int(mask.flat.sum()) == 3 and mask.sparsity == pytest.approx(11 / 14)

    # the mask multiplies gradients and weights
    grads.flat.fill_(2.0)
    mask.apply_to_grads()
    assert params[0].grad.flatten().tolist() == [0.0, 2.0] and params[2].grad.tolist() == [2.0, 0.0]
    mask.apply_to_weights()
    assert params[0].flatten().tolist() == [0.0, 13.0]
    assert params[2].tolist() == [14.0, 0.0] and params[3].tolist() == [-12.0, 0.0]
    assert params[4].abs().sum().item() == 0 and params[5].tolist() == [0.0, 0.0]


def test_global_prune_80_percent_on_resnet():
    torch.manual_seed(0)
    model = resnet18(8).to(memory_format=torch.channels_last)
    params = list(model.parameters())
    grads = FlatGrads(params)
    mask = global_magnitude_mask(grads, 0.8)
    w = np.concatenate([p.detach().abs().flatten().numpy() for p in params])
    threshold = np.percentile(w, 80)
    assert mask.sparsity == pytest.approx(0.8, abs=1e-3)
    for p, view in zip(params, mask.views):
        assert view.stride() == p.stride()
        assert torch.equal(view.bool(), p.detach().abs() > threshold)
    # BatchNorm weights (all 1) survive, BatchNorm biases (all 0) do not
    assert model.bn1.weight.numel() == 8
    assert torch.cat([v.flatten() for v, p in zip(mask.views, params) if p is model.bn1.weight]).all()
    assert not torch.cat([v.flatten() for v, p in zip(mask.views, params) if p is model.bn1.bias]).any()


def test_prune_and_rewind_then_masked_epoch():
    trainer = tiny_trainer(seed=1, batch_size=16)
    everything = torch.arange(len(trainer.train_set))
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_epoch(everything, "dense")
    trained = [p.detach().clone() for p in trainer.grads.params]
    assert not torch.equal(trained[0], initial["conv1.weight"])
    assert not torch.equal(trainer.model.bn1.running_mean, initial["bn1.running_mean"])
    old_optimizer = trainer.optimizer

    trainer.prune_and_rewind(0.8)
    # the mask comes from the trained weights: |w| > their global p80
    threshold = np.percentile(np.concatenate([w.abs().flatten().numpy() for w in trained]), 80)
    for w, view in zip(trained, trainer.mask.views):
        assert torch.equal(view.bool(), w.abs() > threshold)
    assert trainer.mask.sparsity == pytest.approx(0.8, abs=2e-3)
    # the rewind: every tensor of the initial state, buffers included
    state = trainer.model.state_dict()
    assert state.keys() == initial.keys()
    for k in initial:
        assert torch.equal(state[k], initial[k]), k
    # grads are still views of the flat buffer, and a fresh Adam at the base lr
    for p in trainer.grads.params:
        assert p.grad.stride() == p.stride()
        assert p.grad.untyped_storage().data_ptr() == trainer.grads.flat.untyped_storage().data_ptr()
    assert trainer.optimizer is not old_optimizer and len(trainer.optimizer.state) == 0
    assert float(trainer.optimizer.param_groups[0]["lr"]) == pytest.approx(1e-3)

    totals = trainer.train_epoch(everything, "masked")
    steps = math.ceil(len(everything) / 16)
    assert totals[2].item() == pytest.approx(steps * trainer.mask.sparsity, rel=1e-5)
    pruned_any, kept_changed, kept_total = False, 0, 0
    for p, view in zip(trainer.grads.params, trainer.mask.views):
        pruned = ~view.bool()
        state = trainer.optimizer.state[p]
        assert (p.detach()[pruned] == 0).all()                   # pruned weights exactly 0
        assert (state["exp_avg"][pruned] == 0).all()             # every step saw a zero gradient
        assert (state["exp_avg_sq"][pruned] == 0).all()
        pruned_any |= bool(pruned.any())
        init = initial[next(k for k, q in trainer.model.named_parameters() if q is p)]
        kept_changed += int((p.detach()[~pruned] != init[~pruned]).sum())
        kept_total += int((~pruned).sum())
    assert pruned_any
    assert kept_changed > 0.9 * kept_total                       # the survivors trained


def test_masked_step_zeroes_gradients_before_the_optimizer():
    """Inside a masked epoch the pruned entries' gradients are 0 when Adam steps."""
    trainer = tiny_trainer(seed=2, batch_size=20)
    trainer.prune_and_rewind(0.5)
    seen = []
    original_step = trainer.optimizer.step

    def spy_step(*args, **kwargs):
        seen.append(trainer.grads.flat[trainer.mask.flat == 0].abs().max().item())
        seen.append(trainer.grads.flat[trainer.mask.flat == 1].abs().max().item())
        return original_step(*args, **kwargs)

    trainer.optimizer.step = spy_step
    trainer.train_epoch(torch.arange(len(trainer.train_set)), "masked")
    assert len(seen) == 4
    assert seen[0] == 0 and seen[2] == 0 and seen[1] > 0 and seen[3] > 0


# --- 5. augmentation vs torchvision --------------------------------------------------------------

def position_image() -> np.ndarray:
    """uint8 (32, 32, 3): channel 0 = row * 7 + 1, channel 1 = col * 7 + 1, channel 2 = 255."""
    r, c = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([r * 7 + 1, c * 7 + 1, np.full_like(r, 255)], axis=-1).astype(np.uint8)


def torchvision_reference(img: np.ndarray, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """torchvision's RandomCrop(32, padding=4) at offset (dy, dx), then the flip, ToTensor, Normalize."""
    out = TF.pad(Image.fromarray(img), 4, fill=0)
    out = TF.crop(out, dy, dx, 32, 32)
    if flip:
        out = TF.hflip(out)
    return TF.normalize(TF.to_tensor(out), MEAN, STD)


def test_augmentation_matches_torchvision_in_distribution():
    img = position_image()
    images = Images(img[None], np.zeros(1, dtype=np.int64), CPU)
    n = 81 * 2 * 60
    g = torch.Generator().manual_seed(123)
    out = torch.cat([images.augmented(torch.zeros(n // 6, dtype=torch.long), g) for _ in range(6)])
    assert out.shape == (n, 3, 32, 32) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)

    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    raw = ((out * std + mean) * 255).round()  # back to uint8 values
    assert ((out * std + mean) * 255 - raw).abs().max() < 1e-3
    # the centre pixels are inside the image for every offset: they name the offset and the flip
    row = (raw[:, 0, 16, 16] - 1) / 7
    col, col_next = (raw[:, 1, 16, 16] - 1) / 7, (raw[:, 1, 16, 17] - 1) / 7
    flip = col_next < col
    assert ((col_next - col).abs() == 1).all()
    dy = (row - 12).long()
    dx = torch.where(flip, col - 11, col - 12).long()
    assert dy.min() >= 0 and dy.max() <= 8 and dx.min() >= 0 and dx.max() <= 8

    # all 81 offsets x 2 flips at their expected rate (60 each)
    cell = (dy * 9 + dx) * 2 + flip.long()
    counts = torch.bincount(cell, minlength=162).double()
    assert counts.numel() == 162 and counts.min() >= 25 and counts.max() <= 100
    chi2 = ((counts - 60) ** 2 / 60).sum().item()
    assert chi2 < 161 + 8 * math.sqrt(2 * 161)           # 161 degrees of freedom
    assert abs(flip.double().mean().item() - 0.5) < 0.03
    for marginal in (torch.bincount(dy, minlength=9), torch.bincount(dx, minlength=9)):
        assert (marginal - n / 9).abs().max() < 200       # sd ~31

    # padding pixels are exactly zero before the normalisation, real pixels never are
    zero = (-mean / std)
    is_pad = ((out - zero).abs() < 1e-6).all(1)
    in_rows = 32 - (dy - 4).abs()
    in_cols = 32 - (dx - 4).abs()
    assert torch.equal(is_pad.sum((1, 2)), 1024 - in_rows * in_cols)
    assert ((raw == 0).all(1) == is_pad).all()

    # every sample equals torchvision's crop + flip of the same image at its offset and flip
    reference = torch.stack([torchvision_reference(img, c // 18, (c // 2) % 9, bool(c % 2))
                             for c in range(162)])
    torch.testing.assert_close(out, reference[cell], atol=1e-5, rtol=0)


def test_augmentation_uses_the_generator_and_gathers_the_right_images():
    data = tiny_data(train_per_class=3)
    images = Images(data.x_train, data.y_train, CPU)
    idx = torch.tensor([4, 0, 17, 4, 29])
    a = images.augmented(idx, torch.Generator().manual_seed(5))
    b = images.augmented(idx, torch.Generator().manual_seed(5))
    c = images.augmented(idx, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # each sample is one of the 162 crops/flips of its own image
    for k, i in enumerate(idx.tolist()):
        img = data.x_train[i]
        assert any(torch.allclose(a[k], torchvision_reference(img, dy, dx, f), atol=1e-5, rtol=0)
                   for dy in range(9) for dx in range(9) for f in (False, True))


def test_plain_equals_to_tensor_and_normalize():
    data = tiny_data()
    images = Images(data.x_test, data.y_test, CPU)
    idx = torch.tensor([3, 0, 29, 11])
    out = images.plain(idx)
    assert out.shape == (4, 3, 32, 32) and out.is_contiguous(memory_format=torch.channels_last)
    ref = torch.stack([TF.normalize(TF.to_tensor(data.x_test[i]), MEAN, STD) for i in idx.tolist()])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    flat = Images(data.x_test, data.y_test, CPU, torch.contiguous_format).plain(idx)
    assert flat.is_contiguous() and torch.equal(flat, out)


def test_narrow_models_run_contiguous_on_the_cpu():
    """oneDNN#6035: a strided 1x1 conv of < 16 input channels in NHWC hangs or miscomputes its
    weight gradient on the CPU, so such models (width < 16) train contiguous there."""
    cuda = torch.device("cuda")
    assert memory_format(fresh_model(0, ModelParams(width=8, pretrained=False), 10), CPU) == torch.contiguous_format
    assert memory_format(fresh_model(0, ModelParams(width=8, pretrained=False), 10), cuda) == torch.channels_last
    assert memory_format(fresh_model(0, ModelParams(width=16, pretrained=False), 10), CPU) == torch.channels_last
    trainer = tiny_trainer(width=4)
    assert trainer.layout == torch.contiguous_format
    assert trainer.train_set.augmented(torch.arange(3), trainer.generator).is_contiguous()
    assert trainer.model.conv1.weight.is_contiguous()
    totals = trainer.train_epoch(torch.arange(len(trainer.train_set)), "dense")
    assert torch.isfinite(totals).all()


# --- 6. the Trainer ------------------------------------------------------------------------------

def test_sel_learning_rate_follows_the_batch_loss_and_dense_resets_it():
    trainer = tiny_trainer(seed=3, batch_size=64)  # 40 images: one batch per epoch
    everything = torch.arange(len(trainer.train_set))
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.item() == pytest.approx(1e-3)
    totals = trainer.train_epoch(everything, "sel", gamma=1e-6, lr_loss_scale=2.0)
    loss = totals[0].item() / 40                       # the one batch's mean loss
    lr_after = trainer.optimizer.param_groups[0]["lr"]
    assert lr_after.item() == pytest.approx(1e-3 * (1 + 2 * loss), rel=1e-5)
    assert lr_after.item() > 1e-3
    assert 0 <= totals[2].item() <= 1
    trainer.train_epoch(everything, "dense")
    assert trainer.optimizer.param_groups[0]["lr"].item() == pytest.approx(1e-3, rel=1e-7)


def sums(totals) -> dict:
    return unpack_sums(totals.tolist(), 10)


def test_sel_sparsity_sums_and_a_gamma_that_zeroes_everything():
    trainer = tiny_trainer(seed=4, batch_size=16)      # 40 images: 3 steps
    everything = torch.arange(len(trainer.train_set))
    totals = trainer.train_epoch(everything, "sel", gamma=1e-5)
    t = sums(totals)
    assert totals.shape == (5 + 2 * 10 + 1,)
    assert 0 < t["sparsity"] <= 3 and t["gamma"] == pytest.approx(3e-5)
    assert t["bad_step"] == -1  # no step had a non-finite loss
    # E and C per class summed over the 3 batches: E >= 0, C in [0, 1] per batch
    e, c = torch.tensor(t["E"]), torch.tensor(t["C"])
    assert (e >= 0).all() and (c >= 0).all() and (c <= 3).all() and (e > 0).any()
    # a gamma above every gradient zeroes them all: sparsity 1 per step, and on a fresh Adam
    # (no moments yet) the weights do not move, and the changed fraction says so
    trainer = tiny_trainer(seed=4, batch_size=16)
    before = [p.detach().clone() for p in trainer.grads.params]
    t = sums(trainer.train_epoch(everything, "sel", gamma=1e9))
    assert t["sparsity"] == pytest.approx(3.0) and t["changed"] == 0
    for p, b in zip(trainer.grads.params, before):
        assert torch.equal(p.detach(), b)
    # dense: sparsity is not counted
    t = sums(trainer.train_epoch(everything, "dense", measure_ec=False))
    assert t["sparsity"] == 0 and t["gamma"] == 0 and not any(t["E"]) and not any(t["C"])
    assert any(not torch.equal(p.detach(), b) for p, b in zip(trainer.grads.params, before))


def test_changed_fraction_counts_the_weights_the_step_moved():
    """Adam moves a weight whose gradient is zeroed (its momentum): after a dense step, an SEL
    step that zeroes every gradient still changes weights, and the count is exact."""
    trainer = tiny_trainer(seed=6, batch_size=40)      # one step per epoch
    everything = torch.arange(len(trainer.train_set))
    trainer.train_epoch(everything, "dense")
    before = torch.cat([p.detach().flatten().clone() for p in trainer.grads.params])
    t = sums(trainer.train_epoch(everything, "sel", gamma=1e9))
    after = torch.cat([p.detach().flatten() for p in trainer.grads.params])
    assert t["sparsity"] == pytest.approx(1.0)
    assert t["changed"] == pytest.approx((before != after).float().mean().item(), abs=1e-7)
    assert t["changed"] > 0.5  # the mask froze nothing


def test_target_mode_holds_the_sparsity_and_reads_nothing_back():
    trainer = tiny_trainer(seed=7, batch_size=8)       # 40 images: 5 steps
    everything = torch.arange(len(trainer.train_set))
    for target in (0.5, 0.95):
        with SyncCounter() as counter:
            totals = trainer.train_epoch(everything, "sel", target_sparsity=target)
        t = sums(totals)
        assert counter.count == 0
        # a model this small has fewer entries than the sample: the quantile is exact, up to
        # the rounding of k and ties
        assert t["sparsity"] / 5 == pytest.approx(target, abs=0.01), target
        assert t["gamma"] > 0


def manual_evaluation(model, data, held):
    """Test accuracy, held-out accuracy and per-class held-out accuracy, one image at a time."""
    model.eval()
    right = []
    with torch.no_grad():
        for img, y in zip(data.x_test, data.y_test):
            x = TF.normalize(TF.to_tensor(img), MEAN, STD)[None]
            right.append(int(model(x).argmax(1)) == y)
    right = np.array(right, dtype=np.float64)
    per_class = [right[held[data.y_test[held] == c]].mean() for c in range(len(data.classes))]
    return right.mean(), right[held].mean(), per_class


def test_evaluate_arithmetic_on_a_model_with_varied_predictions():
    data = tiny_data(train_per_class=1, test_per_class=8, seed=3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    held = held_out_indices(data.y_test, 3, 10)
    trainer = Trainer(model, data, held, device=CPU, precision="fp32", lr=1e-3, batch_size=8,
                      eval_batch_size=7, seed=0)
    result = trainer.evaluate().tolist()
    total, held_acc, per_class = manual_evaluation(model, data, held)
    # guards: this model tells the three figures apart, and per-class accuracies vary
    assert total != held_acc and len(set(per_class)) > 2
    assert result[0] == pytest.approx(total, abs=1e-6)
    assert result[1] == pytest.approx(held_acc, abs=1e-6)
    assert result[2:-1] == pytest.approx(per_class, abs=1e-6)
    assert result[-1] == result[0]  # without test-time augmentation: the same figure


def test_evaluate_matches_a_manual_computation():
    data = tiny_data(train_per_class=4, test_per_class=5)
    trainer = tiny_trainer(seed=5, data=data, batch_size=16, eval_batch_size=7, held_per_class=3, lr=1e-2)
    for _ in range(4):
        trainer.train_epoch(torch.arange(len(data.y_train)), "dense")
    result = trainer.evaluate()
    assert result.shape == (2 + 10 + 1,)
    held = held_out_indices(data.y_test, 3, 10)
    assert len(held) == 30 and torch.equal(trainer.held_out, torch.as_tensor(held))
    # the same model in eval mode, one image at a time, normalised by torchvision
    total, held_acc, per_class = manual_evaluation(trainer.model, data, held)
    assert result.tolist() == pytest.approx([total, held_acc, *per_class, total], abs=1e-6)
    assert not trainer.model.training


# --- 7. determinism ------------------------------------------------------------------------------

def test_same_seed_same_data_is_bit_identical():
    data = tiny_data(seed=7)

    def run():
        trainer = tiny_trainer(seed=11, data=data, batch_size=16)
        everything = torch.arange(len(data.y_train))
        t1 = trainer.train_epoch(everything, "dense")
        t2 = trainer.train_epoch(everything, "sel", gamma=1e-4)
        return t1, t2, trainer.evaluate(), trainer.model.state_dict()

    a, b = run(), run()
    for x, y in zip(a[:3], b[:3]):
        assert torch.equal(x, y)
    assert a[3].keys() == b[3].keys()
    for k in a[3]:
        assert torch.equal(a[3][k], b[3][k]), k
    assert a[1][2].item() > 0  # the sel epoch did zero something


# --- 8. calibration and sorting ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["eval", "train"])
def test_calibrate_gamma_is_numpy_percentile_of_all_grads(mode):
    data = tiny_data(train_per_class=4)
    trainer = tiny_trainer(seed=21, width=8, data=data)
    result = calibrate_gamma(trainer, 32, 40, mode)

    # independently: the same init (in the trainer's memory format, so the arithmetic is the
    # same), plain autograd, |grad| of every parameter, numpy's percentile
    model = fresh_model(21, ModelParams(width=8, pretrained=False), 10).to(memory_format=trainer.layout)
    model.train(mode == "train")
    x = Images(data.x_train, data.y_train, CPU, trainer.layout).augmented(
        torch.arange(32), torch.Generator().manual_seed(21))
    F.cross_entropy(model(x), torch.as_tensor(data.y_train[:32])).backward()
    g = np.concatenate([p.grad.abs().flatten().numpy() for p in model.parameters()])
    gamma = np.percentile(g, 40)
    assert g.size == n_params(model) == result["n_params"]
    assert result["gamma"] == float(gamma) > 0
    # guard: other interpolations give other values here, so the test tells them apart
    assert all(np.percentile(g, 40, method=m) != gamma for m in ("nearest", "lower", "higher"))
    assert result["batch_size"] == 32 and result["percentile"] == 40 and result["mode"] == mode
    assert result["zeroed_at_gamma"] == float((g <= gamma).mean())
    assert result["zeroed_at_gamma"] == pytest.approx(0.40, abs=1e-3)
    assert trainer.model.training == (mode == "train")


def test_calibrate_modes_differ():
    """eval mode uses BatchNorm's running statistics, train mode the batch's: different gammas."""
    data = tiny_data(train_per_class=4)
    gammas = [calibrate_gamma(tiny_trainer(seed=21, width=8, data=data), 32, 40, m)["gamma"]
              for m in ("eval", "train")]
    assert gammas[0] != pytest.approx(gammas[1], rel=1e-3)


def test_difficulty_order_sorts_each_class_ascending():
    labels = np.array([1, 0, 1, 0, 2, 1, 0, 1])
    losses = np.array([0.5, 0.3, 0.1, 0.9, 0.2, 0.5, 0.05, 2.0])
    order, counts = difficulty_order(losses, labels, 4)   # class 3 has no image
    assert order.tolist() == [6, 1, 3,  2, 0, 5, 7,  4]   # ties keep dataset order (0 before 5)
    assert counts.tolist() == [3, 4, 1, 0]
    pools = Pools(order, counts)
    assert [p.tolist() for p in pools.per_class] == [[6, 1, 3], [2, 0, 5, 7], [4], []]


# --- 9. FLOPs ------------------------------------------------------------------------------------

def test_proxy_flops_formula():
    assert proxy_flops(1000, 0.25, 10) == 15000
    assert proxy_flops(11_173_962, 0.0, 50_000) == 2 * 11_173_962 * 50_000
    assert proxy_flops(100, 0.8, 7) == pytest.approx(2 * 100 * 0.2 * 7)
    assert proxy_flops(100, 1.0, 7) == 0


def test_flops_per_image_of_resnet18():
    torch.manual_seed(0)
    model = resnet18(64)
    assert n_params(model) == 11_173_962
    before = model.conv1.weight.detach().clone()
    train, evaluation = flops_per_image(model)
    assert train == pytest.approx(3.33e9, rel=0.01)
    assert evaluation == pytest.approx(1.11e9, rel=0.01)
    assert train == pytest.approx(3 * evaluation, rel=0.01)
    assert model.conv1.weight.device.type == "cpu" and torch.equal(model.conv1.weight, before)


def test_resnet18_is_torchvisions_built_the_same_way():
    """Our ResNet-18 (built without importing torchvision) against torchvision's, scaled the way
    this project scaled it before: same names, same seeded weights, same outputs."""
    from torchvision.models.resnet import BasicBlock as TvBlock, ResNet as TvResNet

    class TorchvisionScaled(TvResNet):
        def __init__(self, width):
            self._width = width
            super().__init__(TvBlock, [2, 2, 2, 2])

        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:
                self.inplanes = self._width
            return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)

    for width in (8, 64):
        torch.manual_seed(3)
        ours = ResNet18(width)
        torch.manual_seed(3)
        theirs = TorchvisionScaled(width)
        mine, ref = ours.state_dict(), theirs.state_dict()
        assert list(mine) == list(ref)
        for key in ref:
            assert torch.equal(mine[key], ref[key]), key
    x = torch.randn(2, 3, 64, 64)  # at width 64 the stem fits the first stage before resnet18's swap
    assert torch.equal(ours.eval()(x), theirs.eval()(x))
