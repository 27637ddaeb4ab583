"""The training progress display: one bar for the whole run (with its ETA) and a line per epoch."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["TrainingProgress", "format_logs"]


def format_logs(logs: dict[str, float]) -> str:
    """``loss 0.1234 · accuracy 0.9712 · val_loss ...`` in the order the logs were written."""
    return "  ".join(f"{key} {value:.4f}" for key, value in logs.items())


class TrainingProgress:
    """``verbose`` 0: silent; 1: a live bar for the whole run plus a line per epoch; 2: lines only."""

    def __init__(self, verbose: int, epochs: int, steps_per_epoch: int, first_epoch: int = 0) -> None:
        self.verbose, self.epochs, self.first_epoch = verbose, epochs, first_epoch
        self.console = Console(stderr=False, highlight=False)
        self._bar: Progress | None = None
        if verbose == 1 and self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("steps"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            total = (epochs - first_epoch) * steps_per_epoch
            self._task = self._bar.add_task("train", total=total, epoch=first_epoch + 1, epochs=epochs)
            self._bar.start()

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, steps)

    def end_epoch(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        if self.verbose == 0:
            return
        self.console.print(f"epoch {epoch + 1}/{self.epochs}  {format_logs(logs)}  ({seconds:.1f}s)", soft_wrap=True)
        if self._bar is not None:
            self._bar.update(self._task, epoch=min(epoch + 2, self.epochs))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
