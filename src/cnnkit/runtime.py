"""Process-wide settings: seeding, devices, determinism."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import sys

import numpy as np
import torch

from cnnkit.errors import ConfigError

__all__ = ["describe_device", "prefer_channels_last", "resolve_device", "seed_everything", "tune_cpu_allocator"]


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) in one call; return a torch generator for the data order.

    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPU).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple's MPS, then the CPU; anything else is checked, not guessed."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but this machine has no CUDA GPU; use --device cpu")
    return resolved


def describe_device(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200)`` or ``cpu (2 threads)``: what a run says it uses."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return str(device)


_allocator_tuned = False


def tune_cpu_allocator() -> bool:
    """Keep freed tensor memory in the process instead of returning it to the OS after every step.

    glibc serves allocations over 128 KiB with fresh ``mmap`` pages and unmaps them on free, so
    every training step page-faults its activations in again: thousands of faults per step
    for the article's model, ~30% of a CPU step. Raising the mmap and trim thresholds lets
    those buffers be reused (what jemalloc/tcmalloc do for PyTorch). Linux/glibc only; once per
    process; ``CNNKIT_KEEP_MALLOC=1`` turns it off. Returns whether the setting is in effect.
    """
    global _allocator_tuned
    if _allocator_tuned or os.environ.get("CNNKIT_KEEP_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return _allocator_tuned
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters
        _allocator_tuned = bool(libc.mallopt(m_mmap_threshold, 256 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, macOS): leave the allocator alone
        _allocator_tuned = False
    return _allocator_tuned


def prefer_channels_last(model: torch.nn.Module) -> bool:
    """Store a convolutional model's weights channels-last (NHWC), the layout oneDNN and cuDNN run fastest.

    In place; the values do not change, and a model without 2-D convolutions is left alone
    (what it buys: benchmarks/RESULTS.md). Returns whether the model has convolutions (and so
    is now channels-last).
    """
    if not any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return False
    with torch.inference_mode(False):  # called from inference: weights made there could never train again
        model.to(memory_format=torch.channels_last)
    return True
