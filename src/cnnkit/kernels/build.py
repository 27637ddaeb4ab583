"""Compile cnnkit's C kernels with the machine's C compiler on first use, and cache them.

A kernel is one C file in this package, compiled into a shared library per set of ``-D``
constants (its tensor shapes) with ``-O3 -march=native -fopenmp``, and loaded with ctypes.
Building takes about half a second, once per machine and shape: the library is kept in
``$CNNKIT_KERNEL_DIR`` (default ``~/.cache/cnnkit/kernels``), named by a hash of the source, the
constants, the compiler and the CPU, and written to a temporary file then renamed, so processes
building the same kernel at once (torchrun) never load a half-written file. Where that folder
cannot be written, kernels are built into a private temporary folder for the process.

Everything here is optional: without a C compiler (``$CC``, ``cc``, ``gcc`` or ``clang``), on a
failed build, or with ``CNNKIT_NATIVE=0``, :func:`load` returns ``None`` and cnnkit runs the
same computation with torch's operators (the reason is in :func:`status`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["kernel_dir", "load", "status"]

_HERE = Path(__file__).parent
# Tried in order until one builds: the fastest first, the most portable last (no OpenMP means
# one thread; Apple's clang has no -fopenmp, some compilers no -march=native).
_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-fopenmp"],
    ["-O3", "-march=native"],
    ["-O3"],
)
_loaded: dict[str, ctypes.CDLL | None] = {}
_status: dict[str, str] = {}
_lock = threading.Lock()


def kernel_dir() -> Path:
    """Where compiled kernels are kept: ``$CNNKIT_KERNEL_DIR``, else ``~/.cache/cnnkit/kernels``."""
    if os.environ.get("CNNKIT_KERNEL_DIR"):
        return Path(os.environ["CNNKIT_KERNEL_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "cnnkit" / "kernels"


def status() -> dict[str, str]:
    """What happened to each kernel this process asked for: ``"loaded <path>"`` or why not."""
    return dict(_status)


def load(
    source: str, defines: dict[str, int], check: Callable[[ctypes.CDLL], bool] | None = None
) -> ctypes.CDLL | None:
    """The kernel ``source`` (a C file in this package) built with ``defines``, or ``None``.

    ``check`` gets the library once, to declare its functions' types and to test it against
    torch: a library that fails (a miscompiled or mismatched one) is not used. The result (a
    library or its absence) is remembered for the process, so a machine without a compiler pays
    for finding that out once.
    """
    name = _name(source, defines)
    with _lock:
        if name not in _loaded:
            library = _load(name, _HERE / source, defines)
            if library is not None and check is not None and not _passes(check, library, name):
                library = None
            _loaded[name] = library
        return _loaded[name]


def _passes(check: Callable[[ctypes.CDLL], bool], library: ctypes.CDLL, name: str) -> bool:
    """Run ``check``; a kernel that fails it, or makes it raise, is not used (and never stops a run)."""
    try:
        if check(library):
            return True
        _status[name] = "off: it failed its check against torch"
    except Exception as e:  # noqa: BLE001 — whatever went wrong, torch's operators still do the job
        _status[name] = f"off: its check against torch raised {type(e).__name__}: {e}"
    return False


def _name(source: str, defines: dict[str, int]) -> str:
    """``conv_pool-CIN1-CO32-...``: the kernel and its constants, readable in the cache folder."""
    return f"{Path(source).stem}-" + "-".join(f"{key}{value}" for key, value in sorted(defines.items()))


def _load(name: str, source: Path, defines: dict[str, int]) -> ctypes.CDLL | None:
    if os.environ.get("CNNKIT_NATIVE", "1") == "0":
        _status[name] = "off (CNNKIT_NATIVE=0)"
        return None
    compiler = _compiler()
    if compiler is None:
        _status[name] = "off: no C compiler found (set $CC, or install gcc or clang)"
        return None
    path = _library_path(name, source, defines, compiler)
    if path.exists():
        try:
            library = ctypes.CDLL(str(path))
            _status[name] = f"loaded {path}"
            return library
        except OSError:  # not a library we can load (another machine's, or damaged): build it again
            with contextlib.suppress(OSError):
                path.unlink()
    if not _writable(path.parent):  # a read-only home or cache: build for this process only
        path = _private_dir() / path.name
    error = _build(compiler, source, defines, path)
    if error:
        _status[name] = f"off: the build failed ({error})"
        return None
    try:
        library = ctypes.CDLL(str(path))
    except OSError as exc:
        _status[name] = f"off: built but cannot be loaded ({exc})"
        return None
    _status[name] = f"loaded {path}"
    return library


def _library_path(name: str, source: Path, defines: dict[str, int], compiler: str) -> Path:
    """Named by everything that makes the library: the source, the constants, the compiler, the CPU."""
    parts = [source.read_bytes(), repr(sorted(defines.items())).encode(), _compiler_id(compiler).encode(),
             _cpu_id().encode()]  # fmt: skip
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return kernel_dir() / f"{name}-{digest}.so"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


_private: Path | None = None


def _private_dir() -> Path:
    """A folder of this process's own (a fresh, unguessable name): never a file another user planted."""
    global _private
    if _private is None:
        _private = Path(tempfile.mkdtemp(prefix="cnnkit-kernels-"))
        atexit.register(shutil.rmtree, _private, ignore_errors=True)
    return _private


def _build(compiler: str, source: Path, defines: dict[str, int], path: Path) -> str | None:
    """Compile ``source`` into ``path`` atomically; on failure, the compiler's first error."""
    macros = [f"-D{key}={value}" for key, value in defines.items()]
    message = ""
    for flags in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".so")
        os.close(fd)
        # gnu11, not c11: ISO mode turns off FMA contraction; vector extensions are GNU C anyway
        cmd = [compiler, "-std=gnu11", "-ffp-contract=fast", *flags, "-shared", "-fPIC", *macros, str(source),
               "-o", tmp]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:  # a compiler that hangs or cannot start
            Path(tmp).unlink(missing_ok=True)
            return str(exc)
        if done.returncode == 0:
            os.replace(tmp, path)  # readers see the old file or the whole new one, never half of one
            return None
        Path(tmp).unlink(missing_ok=True)
        lines = done.stderr.strip().splitlines()
        errors = [line for line in lines if "error" in line.lower()]
        message = (errors or lines or [f"exit status {done.returncode}"])[0].strip()
    return message


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _compiler_id(compiler: str) -> str:
    """The compiler's path and version line: a new compiler builds new libraries."""
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
        return f"{compiler} {done.stdout.splitlines()[0] if done.stdout else ''}"
    except (OSError, subprocess.TimeoutExpired):
        return compiler


def _cpu_id() -> str:
    """The CPU's model and instruction sets: -march=native code must not move to another CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(dict.fromkeys(lines))  # one copy of each line, not one per core
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
