"""Anatomy classifier for routing volumes to experts (SNU 2025 entries: brain vs knee from the GRAPPA images).

A small CNN maps a magnitude image of any size to logits over :data:`ANATOMY_CLASSES`. The image is resized to
``image_size`` x ``image_size`` (bilinear, antialiased) and divided by its own maximum inside the model, so the
network sees neither the acquisition's intensity scale nor its matrix size: it must recognise the anatomy.
A volume is classified by averaging the slice logits (:func:`classify_volume`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kspacelab import challenge

__all__ = ["ANATOMY_CLASSES", "AnatomyClassifier", "classify_volume", "normalise_images"]

#: Class index -> anatomy name.
ANATOMY_CLASSES: tuple[str, ...] = challenge.ANATOMIES


def normalise_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize magnitude images to ``(image_size, image_size)`` and scale each to a maximum of 1.

    Args:
        images: ``(B, H, W)`` or ``(B, 1, H, W)`` float, non-negative magnitudes (any unit).
        image_size: output side length.

    Returns:
        ``(B, 1, image_size, image_size)`` float32.
    """
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images (B, H, W) or (B, 1, H, W), got {tuple(images.shape)}")
    x = images.float().abs()
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    peak = x.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    return x / peak.view(-1, 1, 1, 1)


class AnatomyClassifier(nn.Module):
    """CNN: ``num_blocks`` x (3x3 conv -> group norm -> ReLU -> 2x2 max pool), global average pool, linear.

    Group normalisation (groups of up to 4 channels) instead of batch normalisation: no running statistics, so
    the network behaves the same in training and evaluation even after a few small batches.

    Channels double per block from ``chans``. About 0.1 M parameters with the defaults.
    """

    def __init__(
        self, chans: int = 16, num_blocks: int = 4, image_size: int = 128, drop_prob: float = 0.1
    ) -> None:
        """Args:
        chans: channels of the first block.
        num_blocks: conv blocks (each halves the resolution).
        image_size: side length the input is resized to.
        drop_prob: dropout before the linear layer.
        """
        super().__init__()
        if num_blocks < 1 or chans < 1 or image_size < 2**num_blocks:
            raise ValueError(
                f"bad classifier size: chans={chans}, num_blocks={num_blocks}, image_size={image_size}"
            )
        self.image_size = image_size
        layers: list[nn.Module] = []
        cin = 1
        for i in range(num_blocks):
            cout = chans * 2**i
            layers += [
                nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
                nn.GroupNorm(max(1, cout // 4), cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(drop_prob)
        self.head = nn.Linear(cin, len(ANATOMY_CLASSES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args:
            images: ``(B, H, W)`` or ``(B, 1, H, W)`` magnitude images (e.g. a volume's ``image_grappa``).

        Returns:
            logits ``(B, len(ANATOMY_CLASSES))`` float32.
        """
        x = normalise_images(images, self.image_size)
        x = self.features(x).mean(dim=(2, 3))
        out: torch.Tensor = self.head(self.dropout(x))
        return out


@torch.no_grad()
def classify_volume(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> tuple[str, float]:
    """Anatomy of a volume: slice logits averaged over the volume, then softmax.

    Args:
        model: an :class:`AnatomyClassifier` (put in eval mode by the caller).
        images: ``(S, H, W)`` magnitude images of the volume.
        batch_size: slices per forward pass.

    Returns:
        ``(anatomy, probability)`` of the winning class.
    """
    device = next(model.parameters()).device
    logits = torch.cat(
        [model(images[i : i + batch_size].to(device)) for i in range(0, images.shape[0], batch_size)]
    )
    probs = torch.softmax(logits.mean(dim=0), dim=0)
    index = int(torch.argmax(probs))
    return ANATOMY_CLASSES[index], float(probs[index])
