"""``cnnkit train``: flags -> TrainConfig -> :func:`cnnkit.recipe.train` (or resume a run).

The same command runs under torchrun (``torchrun --nproc-per-node N -m cnnkit train ...``):
rank 0 prints; an error on any process is one line naming its rank, also left in torchrun's
error file so torchrun's summary names the cause.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import traceback

from cnnkit.cli._common import console
from cnnkit.errors import CnnkitError, ConfigError

__all__ = ["add_parser", "parse_duration", "run"]


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1.5h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 90, 90s, 5m or 1h, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (default: the article's CNN on the built-in digits)",
        description="Train a model. Flags override --config, which overrides the defaults. The same command "
        "trains data-parallel under torchrun: torchrun --nproc-per-node N -m cnnkit train ... (one process per "
        "GPU; see recipes/README.md). Only rank 0 writes the run folder.",
    )
    p.add_argument("--config", metavar="FILE", help="JSON file of training options")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
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
    p.add_argument(
        "--workers", type=int, help="image-decoding workers for a folder or CSV, per process (default: one per core)"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument(
        "--batch-size",
        type=int,
        help="images per step (default 64); under torchrun the global batch, split evenly over the processes "
        "(so N processes train as one would), unless --batch-scope process",
    )
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"], help="sgd uses Nesterov momentum 0.9")
    p.add_argument(
        "--lr",
        type=float,
        help="peak learning rate (see `cnnkit lr-find`), for the global batch: never scaled by the number of "
        "processes; when you grow --batch-size k times, raise it yourself (about k times for SGD)",
    )
    p.add_argument("--weight-decay", type=float, help="applied to weights, never to biases or norm scales")
    p.add_argument("--schedule", choices=["onecycle", "cosine", "constant"])
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--clip-norm", type=float, help="clip the gradient's global norm")
    p.add_argument("--class-weights", help="none, auto (inverse class frequency) or 'label:weight,...'")
    p.add_argument("--ema", type=float, metavar="DECAY", help="keep an EMA of the weights (e.g. 0.999)")
    p.add_argument("--augment", help="auto, none, or ops joined by '+': flip, affine, crop, cutout")
    p.add_argument("--tta", action="store_true", default=None, help="average test predictions over flips")
    p.add_argument("--image-size", type=int, help="resize images to SIZE x SIZE")
    p.add_argument("--val-split", type=float, help="fraction of the training images held out for validation")
    p.add_argument("--patience", type=int, help="stop after this many epochs without a better val_loss")
    p.add_argument("--time", type=parse_duration, help="wall-clock budget (90s, 5m, 1h); the schedule shrinks to fit")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", choices=["auto", "on", "off"])
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", default=None, help="bit-identical runs (slower on GPU)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (under torchrun each process takes cuda:LOCAL_RANK)")
    p.add_argument("--runs-dir", help="where new run folders go (default: runs)")
    p.add_argument("--out", help="the run folder to write (default: runs/<model>-<data>-<time>)")
    p.add_argument("--tensorboard", action="store_true", default=None, help="also write TensorBoard event files")
    p.add_argument("--no-report", dest="report", action="store_false", default=None,
                   help="skip report.html at the end (a few seconds; `cnnkit report RUN` writes it later)")  # fmt: skip
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
    dist = p.add_argument_group("under torchrun")
    dist.add_argument(
        "--batch-scope",
        choices=["global", "process"],
        help="global (default): --batch-size is the global batch; process: it is each process's batch, and the "
        "global batch is that times the number of processes (config.json records the global batch)",
    )
    dist.add_argument("--sync-bn", action="store_true", default=None,
                      help="BatchNorm statistics over the global batch (SyncBatchNorm; GPUs only)")  # fmt: skip
    dist.add_argument(
        "--dist-timeout",
        type=parse_duration,
        metavar="TIME",
        help="how long a process waits for the others (a hung or dead process) before the job ends (default 10m)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output, only the result")
    p.set_defaults(run=run)


_OPTIONS = ("model", "data", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "label_smoothing",
            "clip_norm", "class_weights", "ema", "augment", "tta", "image_size", "val_split", "patience", "time",
            "precision", "channels_last", "compile", "seed", "deterministic", "device", "runs_dir", "out",
            "tensorboard", "report", "weights", "freeze_epochs", "data_dir", "max_bad_files", "workers", "batch_scope",
            "sync_bn", "dist_timeout")  # fmt: skip


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler or torchrun stopping us) ends the run like Ctrl-C: resumable."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    from cnnkit.train import distributed

    _stop_on_sigterm()
    if not distributed.launched_by_torchrun():
        return _run(args)
    world = distributed.World(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    try:
        return _run(args, world.is_main)
    except CnnkitError as e:  # one line naming the rank, also for torchrun's summary
        print(f"cnnkit: error: [{world}] {e}", file=sys.stderr)
        distributed.record_error(world, e)
        return 1
    except Exception as e:  # a bug: keep its traceback, and tell torchrun which rank it was
        distributed.record_error(world, e, traceback.format_exc())
        raise


def _run(args: argparse.Namespace, main: bool = True) -> int:
    from cnnkit.recipe import train
    from cnnkit.train.config import TrainConfig

    if args.resume:
        given = [name for name in _OPTIONS if getattr(args, name) is not None] + (["config"] if args.config else [])
        if given:
            raise ConfigError(f"--resume continues a run with its own settings; drop --{given[0].replace('_', '-')}")
        result = train(resume=args.resume)
    else:
        config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
        config = config.replace(**{name: getattr(args, name) for name in _OPTIONS}, verbose=0 if args.quiet else None)
        if config.verbose and main and config.weights:
            console.print(f"fine-tuning [bold]{config.model}[/] from [bold]{config.weights}[/] weights on "
                          f"[bold]{config.data}[/]: {config.head_only_epochs} epoch(s) of the new head alone, then "
                          f"{config.epochs} of all layers")  # fmt: skip
        elif config.verbose and main:
            console.print(f"training [bold]{config.model}[/] on [bold]{config.data}[/] for {config.epochs} epochs")
        result = train(config)
    t = result.test
    if t is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    console.print(
        f"test accuracy {t.accuracy:.2%}  loss {t.loss:.4f}  top-{t.top_k} error {t.top_k_error:.2%}  "
        f"({t.n} images, {result.seconds:.1f}s)"
    )
    console.print(f"model saved to {result.model_path}")
    report = result.run_dir / "report.html"
    if report.exists():
        console.print(f"report: {report}")
    return 0
