"""Hand-written CPU kernels for the steps where torch's operators leave speed on the table.

Each kernel is a small C file compiled on first use by the machine's C compiler (see
:mod:`cnnkit.kernels.build`) and is optional: without a compiler, or with ``CNNKIT_NATIVE=0``,
cnnkit computes the same thing with torch's operators. :func:`status` says which were used.
"""

from cnnkit.kernels.build import kernel_dir, status
from cnnkit.kernels.conv_pool import fused_conv_pool, supports

__all__ = ["fused_conv_pool", "kernel_dir", "status", "supports"]
