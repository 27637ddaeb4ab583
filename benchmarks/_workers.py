"""One measurement per process, printed as a JSON line; run by train_speed.py and time_to_accuracy.py.

    python benchmarks/_workers.py WORKER [--images N] [--epochs E] [--batch-size B] [--seed S]

Workers: cnnkit-fit (Sequential.fit), cnnkit-train (the `cnnkit train` engine), keras (Keras 3 on
TensorFlow), torch (idiomatic PyTorch: TensorDataset + DataLoader + Adam), and the
*-recipe workers for time-to-accuracy. Keras and TensorFlow are imported only by the keras workers.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def digits(path: str, images: int | None = None):
    """The digits arrays the driver saved (NHWC float32), the training set tiled to ``images``."""
    with np.load(path) as f:
        x, y, xt, yt = f["x"], f["y"], f["xt"], f["yt"]
    if images:
        reps = -(-images // len(x))
        x, y = np.concatenate([x] * reps)[:images], np.concatenate([y] * reps)[:images]
    return x, y, xt, yt


def article_model(layers, models, Input):  # noqa: N803 - Keras' spelling
    """The article's CNN, corrected: the same code builds it in cnnkit and in Keras."""
    return models.Sequential([
        Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.Flatten(),
        layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip


def _per_epoch(times: list[float], images: int) -> float:
    """Images per second from epoch durations, skipping the first (warm-up) epoch."""
    steady = times[1:] if len(times) > 1 else times
    return images / float(np.median(steady))


# -- throughput -------------------------------------------------------------------------------------
def cnnkit_fit(a):
    from cnnkit import callbacks, layers, models

    _without(a.without)
    x, y, _, _ = digits(a.data, a.images)
    model = article_model(layers, models, layers.Input)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = []

    class Timer(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    history = model.fit(x, y, epochs=a.epochs, batch_size=a.batch_size, verbose=0, callbacks=[Timer()])
    return {"images_per_second": _per_epoch(times, len(x)), "train_accuracy": history.history["accuracy"][-1]}


def _without(change: str) -> None:
    """Switch one of the engine's speed-ups off in this process, for train_ablation.py."""
    if change == "nothing":
        return
    from cnnkit.kernels import fusion
    from cnnkit.train import loop, optimizers

    if change == "pool-first":  # activation before pooling, on the full-size maps (Keras' order): no block fuses
        fusion._MONOTONE = frozenset()
    elif change == "native-kernels":  # conv -> pool -> ReLU blocks as torch operators
        os.environ["CNNKIT_NATIVE"] = "0"
    elif change == "channels-last":  # what fit's default (auto) resolves to: the layout as it is, NCHW
        loop.prefer_channels_last = lambda model: False
    elif change == "fused-adam":  # torch's default for CPU parameters: one parameter at a time
        optimizers._fused_ok = lambda params: False
    elif change == "allocator":  # glibc's default mmap/trim thresholds
        os.environ["CNNKIT_KEEP_MALLOC"] = "1"
    else:
        raise SystemExit(f"unknown change {change!r}")


def cnnkit_train(a):
    import csv

    from cnnkit.recipe import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, augment="none", val_split=0.0, verbose=0,
                             out=os.path.join(tmp, "run"), seed=a.seed)  # fmt: skip
        result = train(config)
        with open(os.path.join(tmp, "run", "metrics.csv")) as f:
            rows = list(csv.DictReader(f))
    times = [float(r["seconds"]) for r in rows]
    n_train = len(digits(a.data)[0])
    return {"images_per_second": _per_epoch(times, n_train), "test_accuracy": result.test.accuracy}


def keras_fit(a, batch_size=None, epochs=None, x=None, y=None, validation=None):
    import keras
    from keras import layers, models

    keras.utils.set_random_seed(a.seed)
    if x is None:
        x, y, _, _ = digits(a.data, a.images)
    model = article_model(layers, models, keras.Input)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    history = model.fit(x, y, epochs=epochs or a.epochs, batch_size=batch_size or a.batch_size, verbose=0,
                        callbacks=[Timer()], validation_data=validation)  # fmt: skip
    return times, history.history, len(x)


def keras(a):
    times, history, n = keras_fit(a)
    return {"images_per_second": _per_epoch(times, n), "train_accuracy": history["accuracy"][-1]}


def torch_loop(a, batch_size=None, epochs=None, x=None, y=None, validation=None):
    """The loop of PyTorch's own tutorials: TensorDataset, DataLoader, Adam, loss.item() per step."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(a.seed)
    if x is None:
        x, y, _, _ = digits(a.data, a.images)
    dataset = TensorDataset(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y))
    loader = DataLoader(dataset, batch_size=batch_size or a.batch_size, shuffle=True)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    times, accuracies = [], []
    for _ in range(epochs or a.epochs):
        started = time.perf_counter()
        model.train()
        running = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
        times.append(time.perf_counter() - started)
        if validation is not None:
            model.eval()
            with torch.no_grad():
                xv = torch.from_numpy(validation[0]).permute(0, 3, 1, 2).contiguous()
                accuracies.append(float((model(xv).argmax(1).numpy() == validation[1]).mean()))
    return times, accuracies, len(x)


def torch_(a):
    times, _, n = torch_loop(a)
    return {"images_per_second": _per_epoch(times, n)}


# -- time to accuracy -------------------------------------------------------------------------------
def cnnkit_recipe(a):
    """`cnnkit train` as shipped (its default recipe), on digits."""
    from cnnkit.recipe import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(TrainConfig(seed=a.seed, verbose=0, out=os.path.join(tmp, "run")))
        wall = time.perf_counter() - started
    return {"test_accuracy": result.test.accuracy, "seconds": wall, "epochs": len(result.history["loss"])}


def _time_to_best(times: list[float], accuracies: list[float]) -> dict:
    best = int(np.argmax(accuracies))
    return {"test_accuracy": accuracies[best], "seconds": float(np.sum(times[: best + 1])), "epochs": best + 1}


def keras_recipe(a):
    """The article's recipe in Keras: Adam, batch 32 (Keras' default), 10 epochs, test set as validation."""
    x, y, xt, yt = digits(a.data)
    times, history, _ = keras_fit(a, batch_size=32, epochs=10, x=x, y=y, validation=(xt, yt))
    return _time_to_best(times, history["val_accuracy"])


def torch_recipe(a):
    """The article's recipe as an idiomatic PyTorch loop: Adam, batch 32, 10 epochs."""
    x, y, xt, yt = digits(a.data)
    times, accuracies, _ = torch_loop(a, batch_size=32, epochs=10, x=x, y=y, validation=(xt, yt))
    return _time_to_best(times, accuracies)


WORKERS = {
    "cnnkit-fit": cnnkit_fit, "cnnkit-train": cnnkit_train, "keras": keras, "torch": torch_,
    "cnnkit-recipe": cnnkit_recipe, "keras-recipe": keras_recipe, "torch-recipe": torch_recipe,
}  # fmt: skip

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("worker", choices=WORKERS)
    parser.add_argument("--data", required=True, help="the .npz of digits arrays the driver wrote")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--without", default="nothing", help="cnnkit-fit: one speed-up to switch off")
    args = parser.parse_args()
    print(json.dumps({"worker": args.worker, **WORKERS[args.worker](args)}))
