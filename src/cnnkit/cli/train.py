"""``cnnkit train``: flags -> TrainConfig -> :func:`cnnkit.train.train`."""

from __future__ import annotations

import argparse

from cnnkit.cli._common import console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (default: the article's CNN on the built-in digits)",
                       description="Train a model. Flags override --config, which overrides the defaults.")  # fmt: skip
    p.add_argument("--config", metavar="FILE", help="JSON file of training options")
    p.add_argument("--model", help="registered model (see `cnnkit models`) or an architecture .json (default: seed)")
    p.add_argument(
        "--data",
        help="data set name (see `cnnkit datasets`), a folder of class sub-folders, or a CSV "
        "of path,label (default: digits)",
    )
    p.add_argument(
        "--data-dir", help="the data cache for standard data sets (default: $CNNKIT_DATA, else ~/.cache/cnnkit)"
    )
    p.add_argument(
        "--max-bad-files",
        type=float,
        metavar="SHARE",
        help="stop before training when more than this share of a folder's files is unreadable (default 0.1)",
    )
    p.add_argument("--workers", type=int, help="image-decoding workers for a folder or CSV (default: one per core)")
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
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output, only the result")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.train import TrainConfig, train

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    config = config.replace(
        model=args.model, data=args.data, data_dir=args.data_dir, max_bad_files=args.max_bad_files,
        workers=args.workers, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule, label_smoothing=args.label_smoothing,
        augment=args.augment, image_size=args.image_size, val_split=args.val_split, seed=args.seed,
        deterministic=args.deterministic, device=args.device, runs_dir=args.runs_dir, out=args.out,
        verbose=0 if args.quiet else None,
    )  # fmt: skip
    if config.verbose:
        console.print(f"training [bold]{config.model}[/] on [bold]{config.data}[/] for {config.epochs} epochs")
    result = train(config)
    t = result.test
    console.print(
        f"test accuracy {t.accuracy:.2%}  loss {t.loss:.4f}  top-{t.top_k} error {t.top_k_error:.2%}  "
        f"({t.n} images, {result.seconds:.1f}s)"
    )
    console.print(f"model saved to {result.model_path}")
    return 0
