"""``alexnet`` and ``alexnet_small``: Krizhevsky, Sutskever & Hinton 2012, the ImageNet winner.

Five convolutions (11x11 stride 4, then 5x5, then three 3x3) with ReLU and overlapping 3x3
max pooling, then two dropout-regularized 4096-unit layers. ``alexnet`` keeps the ImageNet
geometry with torchvision's channel widths (64-192-384-256-256: the single-GPU form of the
network, 61,100,840 parameters with 1000 classes; the 2012 paper split 96-256-384-384-256
channels over two GPUs) and torchvision's parameter names, so torchvision's ImageNet weights
load into it. Local response normalization after the first two convolutions, as in the
paper, is optional (``lrn=True``); later work found it adds little.

``alexnet_small`` is the same five-convolution design for 32-64 px images: a 5x5 stride-1
first convolution instead of 11x11 stride 4, and 1024-unit dense layers.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.models._registry import register_model
from cnnkit.models.model import Model

__all__ = ["AlexNet", "alexnet", "alexnet_small"]


def _relu(lrn: bool) -> nn.Module:
    """ReLU, followed by the paper's LRN (k=2, n=5, alpha=1e-4, beta=0.75) when asked.

    Kept in one slot of ``features`` so the convolutions keep torchvision's indices. torch
    divides alpha by n, the paper does not: hence alpha=5e-4 here.
    """
    if not lrn:
        return nn.ReLU(inplace=True)
    return nn.Sequential(nn.ReLU(inplace=True), nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0))


class AlexNet(nn.Module):
    """AlexNet's five convolutions and three dense layers, for ImageNet-sized or small images."""

    def __init__(self, num_classes: int, in_channels: int = 3, *, small: bool = False, lrn: bool = False,
                 dropout: float = 0.5) -> None:  # fmt: skip
        super().__init__()
        # ImageNet: an 11x11 stride-4 stem and unpadded pools; small images: 5x5 stride 1, padded pools.
        stem = nn.Conv2d(in_channels, 64, 5, padding=2) if small else nn.Conv2d(in_channels, 64, 11, 4, padding=2)
        pool_padding = 1 if small else 0
        self.features = nn.Sequential(
            stem,  # (B, 64, 55, 55) at 224 px; (B, 64, 32, 32) at 32 px (small)
            _relu(lrn),
            nn.MaxPool2d(3, 2, pool_padding),  # (B, 64, 27, 27); (B, 64, 16, 16)
            nn.Conv2d(64, 192, 5, padding=2),
            _relu(lrn),
            nn.MaxPool2d(3, 2, pool_padding),  # (B, 192, 13, 13); (B, 192, 8, 8)
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, pool_padding),  # (B, 256, 6, 6); (B, 256, 4, 4)
        )
        pooled, hidden = (4, 1024) if small else (6, 4096)
        # Any input size at or above the minimum ends in the same pooled grid, as in torchvision.
        self.avgpool = nn.AdaptiveAvgPool2d((pooled, pooled))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * pooled * pooled, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        # He initialization (He et al. 2015, fan-in). torch's default gives each layer a sixth of He's
        # weight variance, and with no BatchNorm to rescale them the activations shrink ~2.4x a layer:
        # after eight layers the logits hardly depend on the image (their spread over a batch of
        # digits is 1e-4, against 0.2 with He's) and Adam at the default --lr stays at chance.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 256, h, w)
        x = self.avgpool(x)  # (B, 256, 6, 6) or (B, 256, 4, 4)
        return self.classifier(torch.flatten(x, 1))  # (B, classes)


@register_model(
    "alexnet",
    description="AlexNet, ImageNet geometry: conv 11x11/4, 5x5, 3x 3x3, dense 4096-4096 (LRN optional)",
    paper="Krizhevsky, Sutskever & Hinton 2012, 'ImageNet classification with deep CNNs' (16.4% top-5)",
    input_size=224,
    in_channels=3,
    num_classes=1000,
    min_input_size=63,
    imagenet="alexnet",
)
def alexnet(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224, lrn: bool = False,
            dropout: float = 0.5) -> Model:  # fmt: skip
    """AlexNet for ImageNet-sized images (at least 63x63); torchvision's ImageNet weights fit it."""
    net = AlexNet(num_classes, in_channels, lrn=lrn, dropout=dropout)
    return Model(net, input_shape=(input_size, input_size, in_channels), name="alexnet")


@register_model(
    "alexnet_small",
    description="AlexNet for 32-64 px images: conv 5x5 stem, three poolings, dense 1024-1024",
    paper="Krizhevsky, Sutskever & Hinton 2012 (adapted to small images, as for CIFAR-10)",
    input_size=32,
    in_channels=3,
    min_input_size=16,
)
def alexnet_small(num_classes: int = 10, in_channels: int = 3, input_size: int = 32, lrn: bool = False,
                  dropout: float = 0.5) -> Model:  # fmt: skip
    """AlexNet's design for 32-64 px images."""
    net = AlexNet(num_classes, in_channels, small=True, lrn=lrn, dropout=dropout)
    return Model(net, input_shape=(input_size, input_size, in_channels), name="alexnet_small")
