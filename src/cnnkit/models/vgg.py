"""``vgg11`` and ``vgg16``: Simonyan & Zisserman 2014, with BatchNorm, sized for small images.

VGG's idea: only 3x3 convolutions, stacked, with 2x2 max pooling halving the size after
each stage and the width doubling up to 512. The ImageNet version ends in three dense
layers over a 7x7 grid (over 100M parameters); for 32-64 px images the grid after five
poolings is 1x1 or 2x2, so here a global average pool and a single Linear layer are the
head (the common CIFAR form). BatchNorm after every convolution makes VGG trainable
without the paper's staged initialization.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnkit.models._registry import register_model
from cnnkit.models.model import Model

__all__ = ["VGG", "vgg11", "vgg16"]

# Output channels of each 3x3 convolution; "M" is a 2x2 max pooling (configurations A and D).
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """3x3 conv-BN-ReLU stages with max pooling, then global average pooling and a Linear head."""

    def __init__(self, config: Sequence[int | str], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                blocks.append(nn.MaxPool2d(2))
                continue
            # No conv bias: the BatchNorm right after it has its own shift.
            blocks += [nn.Conv2d(channels, int(item), 3, padding=1, bias=False), nn.BatchNorm2d(int(item)),
                       nn.ReLU(inplace=True)]  # fmt: skip
            channels = int(item)
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He initialization for ReLU networks, as torchvision's VGG
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 512, H/32, W/32): 1x1 at 32 px
        x = self.pool(x).flatten(1)  # (B, 512)
        return self.classifier(x)  # (B, classes)


def _vgg(name: str, num_classes: int, in_channels: int, input_size: int) -> Model:
    net = VGG(CONFIGS[name], num_classes, in_channels)
    return Model(net, input_shape=(input_size, input_size, in_channels), name=name)


@register_model(
    "vgg11",
    description="VGG-11 with BatchNorm for small images: 8 conv 3x3 (64-512), global pool, linear",
    paper="Simonyan & Zisserman 2014, 'Very deep convolutional networks' (config A) + BatchNorm",
    input_size=32,
    in_channels=3,
    min_input_size=32,
)
def vgg11(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> Model:
    return _vgg("vgg11", num_classes, in_channels, input_size)


@register_model(
    "vgg16",
    description="VGG-16 with BatchNorm for small images: 13 conv 3x3 (64-512), global pool, linear",
    paper="Simonyan & Zisserman 2014, 'Very deep convolutional networks' (config D) + BatchNorm",
    input_size=32,
    in_channels=3,
    min_input_size=32,
)
def vgg16(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> Model:
    return _vgg("vgg16", num_classes, in_channels, input_size)
