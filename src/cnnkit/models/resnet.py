"""Residual networks for small images: ``resnet9`` and ``resnet18_small``.

``resnet9`` is the DAWNBench network of David Page ("How to train your ResNet", 2018), the
design behind the fast CIFAR-10 speed runs (airbench's ancestors): three stages of
conv-BN-ReLU with max pooling, two of them with a residual pair of convolutions, a global
max pool and a Linear head whose logits are scaled by 1/8.

``resnet18_small`` is ResNet-18 (He et al. 2016) as commonly used for 32 px images: a 3x3
stride-1 stem and no max pooling, so 32x32 inputs reach the last stage at 4x4 instead of
1x1. It is torchvision's own ResNet-18 with the stem swapped, not a copy of it.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.models._registry import register_model
from cnnkit.models.model import Model

__all__ = ["ResNet9", "resnet18_small", "resnet9"]


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU (no conv bias: BatchNorm shifts)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """``x + f(x)`` with two conv-BN-ReLU blocks as ``f``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class ResNet9(nn.Module):
    """Page's ResNet-9: prep 64, stage 128 (+residual), stage 256, stage 512 (+residual), pool, linear."""

    def __init__(self, num_classes: int, in_channels: int = 3, logit_scale: float = 0.125) -> None:
        super().__init__()
        self.prep = conv_bn(in_channels, 64)  # (B, 64, 32, 32) at 32 px
        self.layer1 = nn.Sequential(conv_bn(64, 128), nn.MaxPool2d(2), Residual(128))  # (B, 128, 16, 16)
        self.layer2 = nn.Sequential(conv_bn(128, 256), nn.MaxPool2d(2))  # (B, 256, 8, 8)
        self.layer3 = nn.Sequential(conv_bn(256, 512), nn.MaxPool2d(2), Residual(512))  # (B, 512, 4, 4)
        self.pool = nn.AdaptiveMaxPool2d(1)  # Page's MaxPool(4) at 32 px, for any size
        self.fc = nn.Linear(512, num_classes, bias=False)
        # Scaled-down logits keep the initial softmax near uniform, which the recipe's
        # high learning rates rely on.
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))  # (B, 512, H/8, W/8)
        x = self.pool(x).flatten(1)  # (B, 512)
        return self.fc(x) * self.logit_scale  # (B, classes)


@register_model(
    "resnet9",
    description="ResNet-9, the DAWNBench fast CIFAR-10 network: conv 64-128-256-512, two residual pairs",
    paper="Page 2018, 'How to train your ResNet' (DAWNBench CIFAR-10)",
    input_size=32,
    in_channels=3,
    min_input_size=8,
)
def resnet9(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> Model:
    return Model(ResNet9(num_classes, in_channels), input_shape=(input_size, input_size, in_channels), name="resnet9")


@register_model(
    "resnet18_small",
    description="ResNet-18 for small images: 3x3 stride-1 stem, no max pool, basic blocks 2-2-2-2",
    paper="He et al. 2016, 'Deep residual learning for image recognition' (CIFAR-style stem)",
    input_size=32,
    in_channels=3,
    min_input_size=8,
)
def resnet18_small(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> Model:
    import torchvision  # imported when used: it takes seconds to import

    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    # ImageNet's 7x7 stride-2 stem and max pool would shrink a 32 px image 4x before the first block.
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits it
    net.maxpool = nn.Identity()
    return Model(net, input_shape=(input_size, input_size, in_channels), name="resnet18_small")
