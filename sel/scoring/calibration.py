"""gamma: the percentile of |grad| over one forward/backward of one batch on the scorer (sort's model).

As the original: the first `batch_size` training images in dataset order, augmented, plain
cross-entropy, |grad| of every parameter pooled (conv, BatchNorm weight and bias, fc), the
percentile with linear interpolation (numpy's default), fp32. The original's model sat in eval
mode (BatchNorm running statistics) because sorting had just put it there; `mode` chooses.
"""

import numpy as np
import torch
import torch.nn.functional as F

from sel.core.errors import SelError
from sel.train.training import Trainer


def calibrate_gamma(trainer: Trainer, batch_size: int, percentile: float, mode: str) -> dict:
    """gamma and what it was computed from."""
    model, images = trainer.model, trainer.train_set
    if batch_size > len(images):
        raise SelError(f"params: calibrate.batch_size = {batch_size} is larger than the data "
                       f"({len(images)} training images)")
    model.train(mode == "train")
    batch = torch.arange(batch_size, device=trainer.device)
    loss = F.cross_entropy(model(images.augmented(batch, trainer.generator)), images.y[batch])
    loss.backward()
    grads = trainer.grads.flat.abs().cpu().numpy()
    trainer.grads.zero()
    gamma = float(np.percentile(grads, percentile))
    return {"gamma": gamma, "percentile": percentile, "batch_size": len(batch), "mode": mode,
            "n_params": int(grads.size), "zeroed_at_gamma": float((grads <= gamma).mean())}
