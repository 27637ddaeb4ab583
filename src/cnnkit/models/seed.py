"""``seed``: the article's CNN (TensorFlow's CNN tutorial), corrected with its missing Flatten.

Conv2D(32, 3x3) -> MaxPool -> Conv2D(64, 3x3) -> MaxPool -> Conv2D(64, 3x3) -> Flatten
-> Dense(64) -> Dense(classes, softmax): 93,322 parameters on 28x28x1 with 10 classes.
"""

from __future__ import annotations

from cnnkit import layers
from cnnkit.models._registry import register_model
from cnnkit.models.sequential import Sequential

__all__ = ["seed"]


@register_model(
    "seed",
    description="the article's CNN: conv 32-64-64, dense 64 (93k params at 28x28x1)",
    paper="TensorFlow CNN tutorial; DataspaceAI, 'CNNs: Revolutionizing Image Recognition'",
    input_size=28,
    in_channels=1,
)
def seed(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> Sequential:
    """The article's model for ``input_size`` x ``input_size`` x ``in_channels`` images."""
    return Sequential(
        [
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=(input_size, input_size, in_channels)),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="seed",
    )
