"""``lenet5``: LeCun, Bottou, Bengio & Haffner 1998, as commonly implemented.

Two 5x5 convolutions (6 and 16 filters) with tanh and 2x2 average pooling ("subsampling"),
then fully connected layers of 120 and 84 units: 61,706 parameters for 32x32x1 inputs and
10 classes. The paper's trainable subsampling coefficients, sparse C3 connections and RBF
output layer are left out, as almost every modern implementation does. The paper padded
MNIST's 28x28 digits to 32x32; here a 28-px input gets a 'same'-padded first convolution
instead, which gives the same 5x5x16 feature maps and the same parameter count.
"""

from __future__ import annotations

from cnnkit import layers
from cnnkit.models._registry import register_model
from cnnkit.models.sequential import Sequential

__all__ = ["lenet5"]


@register_model(
    "lenet5",
    description="LeNet-5: conv 6-16 (5x5, tanh, average pooling), dense 120-84",
    paper="LeCun et al. 1998, 'Gradient-based learning applied to document recognition'",
    input_size=32,
    in_channels=1,
    min_input_size=12,
)
def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 32) -> Sequential:
    """LeNet-5 for ``input_size`` x ``input_size`` x ``in_channels`` images (28 to 32 px is what it was made for)."""
    # Below 32 px, pad like the paper padded MNIST, so C3 still sees 14x14 maps.
    c1_padding = "same" if input_size < 32 else "valid"
    return Sequential(
        [
            layers.InputLayer((input_size, input_size, in_channels)),
            layers.Conv2D(6, (5, 5), activation="tanh", padding=c1_padding, name="c1"),  # (28, 28, 6) at 32 px
            layers.AveragePooling2D((2, 2), name="s2"),  # (14, 14, 6)
            layers.Conv2D(16, (5, 5), activation="tanh", name="c3"),  # (10, 10, 16)
            layers.AveragePooling2D((2, 2), name="s4"),  # (5, 5, 16)
            layers.Flatten(name="flatten"),  # (400,)
            layers.Dense(120, activation="tanh", name="c5"),
            layers.Dense(84, activation="tanh", name="f6"),
            layers.Dense(num_classes, activation="softmax", name="output"),
        ],
        name="lenet5",
    )
