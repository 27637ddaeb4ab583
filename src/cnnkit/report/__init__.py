"""Plots and the self-contained HTML report of a run."""

from cnnkit.report.html import REPORT_FILE, SECTIONS, read_history, write_report
from cnnkit.report.plots import (
    confusion_figure,
    curves_figure,
    figure_png,
    gallery_figure,
    mistakes_figure,
    plot_curves,
    reliability_figure,
    save_figure,
)

__all__ = [
    "REPORT_FILE",
    "SECTIONS",
    "confusion_figure",
    "curves_figure",
    "figure_png",
    "gallery_figure",
    "mistakes_figure",
    "plot_curves",
    "read_history",
    "reliability_figure",
    "save_figure",
    "write_report",
]
