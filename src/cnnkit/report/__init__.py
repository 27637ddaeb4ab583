"""Plots and reports of a run."""

from cnnkit.report.plots import plot_curves

__all__ = ["plot_curves"]
