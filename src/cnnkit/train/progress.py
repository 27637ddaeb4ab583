"""The training progress display: one bar for the whole run, with its ETA, and a line per epoch.

The bar shows the epoch, step, running loss and accuracy, images per second and the time
left for the *whole* run. Running values are read from the device at most twice a second,
so the display never slows training down.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

__all__ = ["TrainingProgress", "format_logs"]

_REFRESH_SECONDS = 0.5


def format_logs(logs: dict[str, float]) -> str:
    """``loss 0.1234  accuracy 0.9712  val_loss ...`` in the order the logs were written."""
    return "  ".join(f"{key} {value:.4f}" for key, value in logs.items())


class TrainingProgress:
    """``verbose`` 0: silent; 1: a live bar (on a terminal) plus a line per epoch; 2: lines only.

    Under torchrun rank 0 shows it for the whole job: ``processes`` scales the images per second,
    and the running values it is given are sums over every rank.
    """

    def __init__(self, verbose: int, epochs: int, steps_per_epoch: int, first_epoch: int = 0, *,
                 processes: int = 1) -> None:  # fmt: skip
        self.verbose, self.epochs, self.steps = verbose, epochs, steps_per_epoch
        self.processes = processes  # under torchrun each step trains this many shards: the speed is the job's
        self.console = Console(highlight=False, markup=False)  # metric names are the user's, never styles
        self._bar: Progress | None = None
        self._images, self._since, self._last_read = 0, time.perf_counter(), 0.0
        if verbose == 1 and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[running]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            total = (epochs - first_epoch) * steps_per_epoch
            self._task = self._bar.add_task("train", total=total, epoch=first_epoch + 1, epochs=epochs, running="")
            self._bar.start()

    def advance(self, images: int, running: Callable[[], dict[str, float]]) -> None:
        """One step of ``images`` done; ``running()`` gives the epoch's running loss and metrics."""
        if self._bar is None:
            return
        self._images += images * self.processes
        now = time.perf_counter()
        fields = {}
        if now - self._last_read > _REFRESH_SECONDS:
            speed = self._images / max(now - self._since, 1e-9)
            values = "  ".join(f"{k} {v:.4f}" for k, v in running().items())
            fields["running"] = f"{values}  {speed:,.0f} img/s"
            self._last_read = now
        self._bar.advance(self._task, 1)
        if fields:
            self._bar.update(self._task, **fields)

    def end_epoch(self, epoch: int, logs: dict[str, float], seconds: float, skipped: int = 0) -> None:
        if self.verbose == 0:
            return
        line = Text(f"epoch {epoch + 1}/{self.epochs}  {format_logs(logs)}  ({seconds:.1f}s)")
        if skipped:
            line.append(f"  skipped {skipped} non-finite step(s)", style="yellow")
        self.console.print(line, soft_wrap=True)
        if self._bar is not None:
            self._bar.update(self._task, epoch=min(epoch + 2, self.epochs))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
