"""One measurement of keras_compare.py, in a fresh process, printed as a JSON line.

    python benchmarks/_keras_compare_worker.py {cnnkit,keras} {article,convnet} --data D.npz [--images N] ...

The same Keras code runs in both: ``import cnnkit as keras`` or ``import keras`` (its backend
from ``KERAS_BACKEND``, tensorflow or torch) is the only difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def build(keras, which: str):
    """The article's CNN, or Keras' "simple MNIST convnet" (keras.io/examples/vision/mnist_convnet)."""
    layers = keras.layers
    Sequential = getattr(keras, "Sequential", None) or keras.models.Sequential  # noqa: N806
    Input = getattr(keras, "Input", None) or layers.Input  # noqa: N806 (Keras' spelling)
    if which == "article":
        return Sequential([
            Input((28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"), layers.Flatten(),
            layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax"),
        ])  # fmt: skip
    return Sequential([
        Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"), layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"), layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(), layers.Dropout(0.5), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip


def data(path: str, images: int) -> tuple[np.ndarray, ...]:
    """The digits arrays the driver saved (NHWC float32 in [0, 1]), train tiled to ``images``, test to 10,000."""
    with np.load(path) as f:
        x, y, xt = f["x"], f["y"], f["xt"]
    tile = lambda a, n: np.concatenate([a] * -(-n // len(a)))[:n]  # noqa: E731
    return tile(x, images), tile(y, images), tile(xt, 10_000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("api", choices=["cnnkit", "keras"])
    parser.add_argument("model", choices=["article", "convnet"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    if a.api == "cnnkit":
        import cnnkit as keras
    else:
        import keras
    keras.utils.set_random_seed(a.seed)
    x, y, x_test = data(a.data, a.images)
    model = build(keras, a.model)
    if a.model == "article":  # the article: integer labels
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        fit = {}
    else:  # Keras' example: one-hot labels, a tenth held out for validation
        y = keras.utils.to_categorical(y, 10)
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        fit = {"validation_split": 0.1}
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    history = model.fit(x, y, batch_size=a.batch_size, epochs=a.epochs, verbose=0, callbacks=[Timer()], **fit)
    trained = int(len(x) * (1 - fit.get("validation_split", 0)))
    steady = times[1:] if len(times) > 1 else times  # the first epoch is warm-up (graph tracing, kernel builds)
    one = []
    for i in range(13):  # predict on one image, as an app calls it; 3 warm-up calls
        started = time.perf_counter()
        model.predict(x_test[i : i + 1], verbose=0)
        one.append(time.perf_counter() - started)
    model.predict(x_test[:1000], verbose=0)  # warm-up at the full batch size (Keras' default: 32)
    started = time.perf_counter()
    probs = model.predict(x_test, verbose=0)  # 10,000 images
    many = [time.perf_counter() - started]
    assert probs.shape == (10_000, 10)
    print(json.dumps({
        "train_images_per_second": trained / statistics.median(steady),
        "predict_1_ms": 1e3 * statistics.median(one[3:]),
        "predict_10k_s": many[0],
        "train_accuracy": float(history.history["accuracy"][-1]),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
