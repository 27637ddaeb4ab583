"""``seed``: the article's CNN (TensorFlow's CNN tutorial), corrected with its missing Flatten,
and a few width/depth variants of it to compare against.

Conv2D(32, 3x3) -> MaxPool -> Conv2D(64, 3x3) -> MaxPool -> Conv2D(64, 3x3) -> Flatten
-> Dense(64) -> Dense(classes, softmax): 93,322 parameters on 28x28x1 with 10 classes.
The variants change one thing each: the width (``seed_small``, ``seed_wide``), the depth
(``seed_deep``: two convolutions per stage) or add BatchNormalization (``seed_bn``).
"""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit import layers
from cnnkit.models._registry import register_model
from cnnkit.models.sequential import Sequential

__all__ = ["seed", "seed_bn", "seed_deep", "seed_small", "seed_wide"]

_PAPER = "TensorFlow CNN tutorial; DataspaceAI, 'CNNs: Revolutionizing Image Recognition'"


def _conv(filters: int, batch_norm: bool, **kwargs) -> list[layers.Layer]:
    """A 3x3 convolution with ReLU; with BatchNormalization between them when asked.

    The BatchNorm's momentum is 0.9, not Keras' default 0.99: with 0.99 the running statistics
    of a short training on a small set (digits: ~200 steps) are still mostly their initial
    values, and in eval mode the model scored 36% on digits' test images at 97% training accuracy.
    """
    if not batch_norm:
        return [layers.Conv2D(filters, (3, 3), activation="relu", **kwargs)]
    return [layers.Conv2D(filters, (3, 3), use_bias=False, **kwargs), layers.BatchNormalization(momentum=0.9),
            layers.Activation("relu")]  # fmt: skip


def seed_cnn(
    name: str,
    num_classes: int,
    in_channels: int,
    input_size: int,
    widths: Sequence[int] = (32, 64, 64),
    dense: int = 64,
    convs_per_stage: int = 1,
    batch_norm: bool = False,
) -> Sequential:
    """The article's layout: ``len(widths)`` conv stages with max pooling between them, then two Dense."""
    model = Sequential(name=name)
    model.add(layers.InputLayer((input_size, input_size, in_channels)))
    for stage, filters in enumerate(widths):
        last = stage == len(widths) - 1
        for _ in range(convs_per_stage if not last else 1):
            # Deeper variants pad their convolutions so pooling alone shrinks the image.
            padding = "same" if convs_per_stage > 1 and not last else "valid"
            for layer in _conv(filters, batch_norm, padding=padding):
                model.add(layer)
        if not last:
            model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Flatten())
    model.add(layers.Dense(dense, activation="relu"))
    model.add(layers.Dense(num_classes, activation="softmax"))
    return model


@register_model(
    "seed",
    description="the article's CNN: conv 32-64-64 (3x3, ReLU, max-pool), dense 64",
    paper=_PAPER,
    input_size=28,
    in_channels=1,
    min_input_size=18,
)
def seed(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> Sequential:
    """The article's model for ``input_size`` x ``input_size`` x ``in_channels`` images."""
    return seed_cnn("seed", num_classes, in_channels, input_size)


@register_model(
    "seed_small",
    description="the article's CNN at half width: conv 16-32-32, dense 32",
    paper="a variant of seed",
    input_size=28,
    in_channels=1,
    min_input_size=18,
)
def seed_small(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> Sequential:
    return seed_cnn("seed_small", num_classes, in_channels, input_size, widths=(16, 32, 32), dense=32)


@register_model(
    "seed_wide",
    description="the article's CNN at double width: conv 64-128-128, dense 128",
    paper="a variant of seed",
    input_size=28,
    in_channels=1,
    min_input_size=18,
)
def seed_wide(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> Sequential:
    return seed_cnn("seed_wide", num_classes, in_channels, input_size, widths=(64, 128, 128), dense=128)


@register_model(
    "seed_deep",
    description="the article's CNN with two 3x3 convolutions per stage (VGG's idea)",
    paper="a variant of seed; Simonyan & Zisserman 2014 (VGG)",
    input_size=28,
    in_channels=1,
    min_input_size=12,
)
def seed_deep(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> Sequential:
    return seed_cnn("seed_deep", num_classes, in_channels, input_size, convs_per_stage=2)


@register_model(
    "seed_bn",
    description="the article's CNN with BatchNormalization after each convolution",
    paper="a variant of seed; Ioffe & Szegedy 2015 (BatchNorm)",
    input_size=28,
    in_channels=1,
    min_input_size=18,
)
def seed_bn(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> Sequential:
    return seed_cnn("seed_bn", num_classes, in_channels, input_size, batch_norm=True)
