"""torchvision's ImageNet families, for transfer learning: ResNet, MobileNetV3, EfficientNet, ConvNeXt.

Each is built by torchvision's own builder (``torchvision.models.get_model``) with the
requested class count; a grey (1-channel) model gets a 1-channel first convolution of the
same shape. Their published ImageNet weights load with ``--weights imagenet`` (see
:mod:`cnnkit.models.weights`), which also records the mean/std they expect.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cnnkit.models._registry import register_model
from cnnkit.models.model import Model

__all__ = ["FAMILIES", "replace_first_conv"]


@dataclass(frozen=True)
class Family:
    description: str
    paper: str
    # The classifier's weight ~ normal(0, head_std), bias 0, where torchvision's own init suits only
    # ImageNet's 1000 classes (None: torchvision's).
    head_std: float | None = None


_RESNET = "He et al. 2016, 'Deep residual learning for image recognition'"
_MOBILENET = "Howard et al. 2019, 'Searching for MobileNetV3'"
FAMILIES: dict[str, Family] = {
    "resnet18": Family("ResNet-18 (torchvision): basic residual blocks 2-2-2-2, ImageNet stem", _RESNET),
    "resnet50": Family("ResNet-50 (torchvision): bottleneck residual blocks 3-4-6-3", _RESNET),
    "mobilenet_v3_small": Family("MobileNetV3-Small (torchvision): inverted residuals, SE, h-swish", _MOBILENET),
    "mobilenet_v3_large": Family("MobileNetV3-Large (torchvision): inverted residuals, SE, h-swish", _MOBILENET),
    "efficientnet_b0": Family(
        "EfficientNet-B0 (torchvision): MBConv blocks, compound scaling",
        "Tan & Le 2019, 'EfficientNet: rethinking model scaling for CNNs'",
        # torchvision (as the TensorFlow reference) draws it uniform in +-1/sqrt(classes): +-0.03 for
        # ImageNet, but +-0.32 for 10 classes, whose logits then start with a std of ~5, and the first
        # epoch's loss on digits is 5.4 (ln 10 = 2.3). Test accuracy after the default 30 epochs:
        # 96.1% / 97.2% (seeds 0, 1) with it, 99.4% / 99.4% with MobileNetV3's std 0.01.
        head_std=0.01,
    ),
    "convnext_tiny": Family(
        "ConvNeXt-Tiny (torchvision): 7x7 depthwise convs, LayerNorm, a modernized ResNet",
        "Liu et al. 2022, 'A ConvNet for the 2020s'",
    ),
}


def replace_first_conv(net: nn.Module, in_channels: int) -> None:
    """Swap the first convolution for one taking ``in_channels``, same kernel, stride, padding and bias."""
    name, conv = next((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=conv.bias is not None,
    )  # fmt: skip
    parent_name, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, attr, new)


def _default_batchnorm_momentum(net: nn.Module) -> None:
    """Give every BatchNorm PyTorch's default momentum, 0.1 (as timm's MobileNetV3 has).

    torchvision builds MobileNetV3 with 0.01, the TensorFlow reference's 0.99 decay, tuned for
    ImageNet's hundreds of thousands of steps. Trained from scratch on a small data set, the
    running statistics are then still mostly their initial value after a few hundred steps, and in
    eval mode the signal fades block by block: on digits, a mobilenet_v3_small at 95% training
    accuracy answered one class for every test image. Published weights load their statistics
    either way; this only sets how fast training moves them.
    """
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1


def _register(name: str, family: Family) -> None:
    def build(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> Model:
        import torchvision  # imported when used: it takes seconds to import

        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        replace_first_conv(net, in_channels)
        _default_batchnorm_momentum(net)
        if family.head_std is not None:
            head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]  # weight (classes, features)
            nn.init.normal_(head.weight, std=family.head_std)
            nn.init.zeros_(head.bias)
        return Model(net, input_shape=(input_size, input_size, in_channels), name=name)

    build.__name__ = name
    build.__doc__ = f"{family.description}, for ``num_classes`` classes."
    register_model(
        name,
        description=family.description,
        paper=family.paper,
        input_size=224,
        in_channels=3,
        num_classes=1000,
        min_input_size=32,  # the networks downsample 32x; below that the last stage has no pixels
        imagenet=name,
    )(build)


for _name, _family in FAMILIES.items():
    _register(_name, _family)
