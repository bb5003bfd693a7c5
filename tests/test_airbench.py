"""The airbench net: its whitening init, its executed FLOPs, its shapes."""

import numpy as np
import torch
from torch.nn import functional as F

from sel.config.params import ModelParams
from sel.data.augment import Images
from sel.method.flops import flops_per_image
from sel.train.airbench import WHITEN_EPS, Airbench, init_whitening
from sel.train.model import build_model, fresh_model

AIRBENCH = ModelParams(arch="airbench", widths=(8, 8, 8), pretrained=False)


def anisotropic_images(n=200, seed=0):
    """uint8 images whose 2x2 patch covariance tells rows from columns and channel from
    position: noise smoothed along rows only, channels mixed with unequal gains. A whitening
    built with the patch layout transposed, or unscaled, is then visibly not whitening."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32, 33, 3))
    x = x[:, :, 1:] + 0.8 * x[:, :, :-1]                       # correlated along a row
    x = x @ np.array([[1.0, 0.0, 0.0], [0.6, 0.5, 0.0], [0.2, 0.3, 0.25]])  # unequal channels
    return np.clip(128 + 30 * x, 0, 255).astype(np.uint8)


def normalised(images):
    return Images(images, np.zeros(len(images), dtype=np.int64), torch.device("cpu"), padding=0) \
        .plain(torch.arange(len(images)))


def test_whitening_gives_patch_features_of_identity_second_moment():
    """Up to eps: direction i comes out with second moment lambda_i / (lambda_i + eps)."""
    images = anisotropic_images()
    x = normalised(images).double()
    model = fresh_model(0, AIRBENCH, 10, images)
    features = F.conv2d(x, model.whiten.weight.double())  # (N, 24, 31, 31), without the bias
    flat = features.permute(1, 0, 2, 3).reshape(24, -1)
    moment = flat @ flat.T / flat.shape[1]
    # the eigenvalues do not depend on the patch layout: any order of the 12 pixels will do
    patches = torch.stack([x[:, c, i:i + 31, j:j + 31].flatten() for c in range(3) for i in (0, 1) for j in (0, 1)])
    eigenvalues = torch.linalg.eigvalsh(patches @ patches.T / patches.shape[1]).flip(0)
    expected = torch.diag(eigenvalues / (eigenvalues + WHITEN_EPS))
    assert expected.diagonal().min() < 0.95  # eps matters here, so it is checked too
    assert torch.allclose(moment[:12, :12], expected, atol=1e-4), moment[:12, :12]
    assert torch.allclose(moment[12:, 12:], expected, atol=1e-4)  # the negatives
    assert torch.allclose(moment[:12, 12:], -expected, atol=1e-4)
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad


def test_whitening_is_deterministic_and_leaves_the_rng_alone():
    images = anisotropic_images(50)
    a, b = Airbench((8, 8, 8)), Airbench((8, 8, 8))
    state = torch.get_rng_state()
    init_whitening(a, images)
    init_whitening(b, images)
    assert torch.equal(a.whiten.weight, b.whiten.weight)
    assert torch.equal(state, torch.get_rng_state())


def test_forward_gives_logits_per_class():
    model = fresh_model(0, AIRBENCH, 10, anisotropic_images(20))
    assert model(torch.randn(5, 3, 32, 32)).shape == (5, 10)
    with torch.device("meta"):  # budget_images: a shape only, no images, no whitening
        assert build_model(AIRBENCH, 10)(torch.empty(2, 3, 32, 32)).shape == (2, 10)


def test_flops_per_image_counts_every_conv_and_the_head():
    widths = (2, 3, 4)
    convs = [(31, 24, 3, 2)]  # (output side, out channels, in channels, kernel): the whitening
    side, c_in = 31, 24
    for c_out in widths:  # conv at the group's input size, pool, conv at half of it
        convs += [(side, c_out, c_in, 3), (side // 2, c_out, c_out, 3)]
        side, c_in = side // 2, c_out
    assert side == 3
    macs = [s * s * o * i * k * k for s, o, i, k in convs] + [widths[2] * 10]
    forward = 2 * sum(macs)
    # backward: twice the forward for every layer (input and weight gradients) but the whitening
    # conv, whose weight is frozen and whose input (the image) needs no gradient
    train = 3 * forward - 2 * 2 * macs[0]
    model = build_model(ModelParams(arch="airbench", widths=widths, pretrained=False), 10)
    assert flops_per_image(model) == (train, forward)
