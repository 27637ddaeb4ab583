"""``cnnkit train``: flags -> TrainConfig -> :func:`cnnkit.train.train`."""

from __future__ import annotations

import argparse

from cnnkit.cli._common import console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (default: the article's CNN on the built-in digits)",
                       description="Train a model. Flags override --config, which overrides the defaults.")  # fmt: skip
    p.add_argument("--config", metavar="FILE", help="JSON file of training options")
    p.add_argument("--model", help="registered model (see `cnnkit models`) or an architecture .json (default: seed)")
    p.add_argument("--data", help="data set name (see `cnnkit datasets`; default: digits)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"])
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["onecycle", "cosine", "constant"])
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--augment", choices=["auto", "none", "crop", "flip-crop"])
    p.add_argument("--image-size", type=int, help="resize images to SIZE x SIZE")
    p.add_argument("--val-split", type=float, help="fraction of the training images held out for validation")
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", default=None, help="deterministic kernels (slower)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--runs-dir", help="where new run folders go (default: runs)")
    p.add_argument("--out", help="the run folder to write (default: runs/<model>-<data>-<time>)")
    p.add_argument(
        "--weights",
        metavar="imagenet|FILE",
        help="start from pretrained weights and fine-tune: 'imagenet' (torchvision's, downloaded once) "
        "or a .safetensors/.pth file (a cnnkit model or a torchvision state dict)",
    )
    p.add_argument(
        "--freeze-epochs",
        type=int,
        metavar="N",
        help="with --weights: train only the new head for N epochs first (default 1), then all layers",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output, only the result")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.train import TrainConfig, train

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    config = config.replace(
        model=args.model, data=args.data, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule, label_smoothing=args.label_smoothing,
        augment=args.augment, image_size=args.image_size, val_split=args.val_split, seed=args.seed,
        deterministic=args.deterministic, device=args.device, runs_dir=args.runs_dir, out=args.out,
        verbose=0 if args.quiet else None, weights=args.weights, freeze_epochs=args.freeze_epochs,
    )  # fmt: skip
    if config.verbose and config.weights:
        console.print(f"fine-tuning [bold]{config.model}[/] from [bold]{config.weights}[/] weights on "
                      f"[bold]{config.data}[/]: {config.head_only_epochs} epoch(s) of the new head alone, then "
                      f"{config.epochs} of all layers")  # fmt: skip
    elif config.verbose:
        console.print(f"training [bold]{config.model}[/] on [bold]{config.data}[/] for {config.epochs} epochs")
    result = train(config)
    t = result.test
    console.print(
        f"test accuracy {t.accuracy:.2%}  loss {t.loss:.4f}  top-{t.top_k} error {t.top_k_error:.2%}  "
        f"({t.n} images, {result.seconds:.1f}s)"
    )
    console.print(f"model saved to {result.model_path}")
    return 0
