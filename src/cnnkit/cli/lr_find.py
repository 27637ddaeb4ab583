"""``cnnkit lr-find``: sweep the learning rate on the training data and suggest a peak rate."""

from __future__ import annotations

import argparse

from cnnkit.cli._common import console

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lr-find", help="find a good learning rate (plot + suggestion)")
    p.add_argument("--model", default="seed", help="registered model or architecture .json")
    p.add_argument("--data", default="digits", help="data set name")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"], default="adam")
    p.add_argument("--image-size", type=int)
    p.add_argument("--steps", type=int, default=100, help="at most this many batches")
    p.add_argument("--out", default="lr_find.png", help="where to save the plot")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cnnkit.data.prepare import training_data
    from cnnkit.recipe.build import build_model, make_optimizer, training_tensors
    from cnnkit.runtime import resolve_device, seed_everything
    from cnnkit.train import losses
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.lr_find import lr_find, plot_lr_find

    config = TrainConfig(model=args.model, data=args.data, batch_size=args.batch_size, optimizer=args.optimizer,
                         image_size=args.image_size, seed=args.seed, val_split=0.0)  # fmt: skip
    config.validate()
    generator = seed_everything(config.seed)
    prepared = training_data(config)
    model = build_model(config, prepared.dataset).to(resolve_device("auto"))
    train_set, _ = training_tensors(prepared, model)
    loss = losses.SparseCategoricalCrossentropy()
    result = lr_find(model, train_set, loss, make_optimizer(config, model), steps=args.steps,
                     batch_size=config.batch_size, generator=generator)  # fmt: skip
    path = plot_lr_find(result, args.out)
    lowest = result.lrs[int(np.argmin(result.losses))]
    console.print(f"suggested peak learning rate: {result.suggestion:.2g} (lowest loss at {lowest:.2g})")
    console.print(f"plot saved to {path}; train with: cnnkit train --lr {result.suggestion:.2g}")
    return 0
