"""Hand-written CPU kernels for the steps where torch's operators leave speed on the table, and the pass that uses them.

Each kernel is a small C file compiled on first use by the machine's C compiler (see
:mod:`cnnkit.kernels.build`) and is optional: without a compiler, or with ``CNNKIT_NATIVE=0``,
cnnkit computes the same thing with torch's operators. :func:`status` says which were used.
The kernels take tensors and integers; :func:`fuse` (:mod:`cnnkit.kernels.fusion`) is the one
place that reads a model's layers to feed them: the engine and the predictors run a model
through it, while the model's own ``forward`` runs its layers as written.
"""

from cnnkit.kernels.build import kernel_dir, status
from cnnkit.kernels.conv_pool import fused_conv_pool, supports
from cnnkit.kernels.fusion import Fused, fuse, kernel_arguments

__all__ = ["Fused", "fuse", "fused_conv_pool", "kernel_arguments", "kernel_dir", "status", "supports"]
