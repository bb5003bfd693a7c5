"""The original's transforms, applied to whole batches on the training device.

Training (`augment`): crop4, the original's RandomCrop(32, padding=4) with zero padding, or
translate2, airbench's random translation by up to 2 pixels of the reflection-padded image; each
with RandomHorizontalFlip(p=0.5) (or the flips the trainer chooses: airbench's alternating flip),
then the official normalisation; evaluation: the normalisation alone. Images stay uint8
(N, 32, 32, 3) on the device; a batch is gathered, cropped and flipped in one indexing op, then
normalised into NCHW float with channels-last memory (the permute gives that layout for free), or
contiguous where the model runs contiguous (`device.memory_format`).
"""

import torch

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


AUGMENT = {"crop4": {"padding": 4}, "translate2": {"padding": 2, "reflect": True}}  # train.augment


class Images:
    """A split's uint8 images and labels on `device`, served as normalised batches."""

    def __init__(self, x_uint8, y, device: torch.device,
                 layout: torch.memory_format = torch.channels_last, padding: int = 4, reflect: bool = False):
        self.x = torch.as_tensor(x_uint8).to(device)
        self.y = torch.as_tensor(y).to(device)
        self.layout, self.padding, self.reflect = layout, padding, reflect
        # zero padding is stored; reflection is an index map into the image itself
        self.padded = None if reflect else torch.nn.functional.pad(self.x, (0, 0, padding, padding, padding, padding))
        scale = torch.tensor([1 / (255 * s) for s in STD], device=device)
        self.scale = scale.view(1, 3, 1, 1)
        self.shift = (-torch.tensor(MEAN, device=device) / torch.tensor(STD, device=device)).view(1, 3, 1, 1)
        self.arange = torch.arange(32, device=device)

    def __len__(self):
        return len(self.y)

    def normalise(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """(N, 32, 32, 3) uint8 -> (N, 3, 32, 32) float, (x / 255 - mean) / std, in `layout`."""
        x = torch.addcmul(self.shift, x_uint8.permute(0, 3, 1, 2), self.scale)
        return x.contiguous(memory_format=self.layout)

    def plain(self, idx: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.x[idx])

    def augmented(self, idx: torch.Tensor, generator: torch.Generator,
                  flip: torch.Tensor | None = None) -> torch.Tensor:
        """Random crop of the padded image at one of (2p+1)^2 offsets, flipped with p=0.5 or
        where `flip` (bool, one per image of `idx`) says."""
        n, span = len(idx), 2 * self.padding + 1
        dev = self.x.device
        dy = torch.randint(0, span, (n, 1), device=dev, generator=generator)
        dx = torch.randint(0, span, (n, 1), device=dev, generator=generator)
        if flip is None:
            flip = torch.rand((n, 1), device=dev, generator=generator) < 0.5
        flip = flip.view(n, 1)
        rows = dy + self.arange
        cols = dx + torch.where(flip, 31 - self.arange, self.arange)
        if self.reflect:  # padded position i is image position |i - p|, mirrored at the far edge
            rows, cols = (31 - (31 - (i - self.padding).abs()).abs() for i in (rows, cols))
            crops = self.x[idx.view(n, 1, 1), rows.view(n, 32, 1), cols.view(n, 1, 32)]
        else:
            crops = self.padded[idx.view(n, 1, 1), rows.view(n, 32, 1), cols.view(n, 1, 32)]
        return self.normalise(crops)
