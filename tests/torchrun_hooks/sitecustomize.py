"""Test-only probes inside the processes torchrun starts (tests/test_distributed.py puts this folder first
on PYTHONPATH, so every Python process imports it at start-up; only torchrun's workers act on it).

With ``CNNKIT_TEST_LOG=DIR`` set, each worker:

- appends ``restart rank pass digest`` to ``DIR/passes.txt`` after every training pass, the digest
  being a hash of its model's weights (replicas in step have equal digests);
- with ``CNNKIT_TEST_WATCH=RUN_FOLDER``, records every file it creates, opens for writing,
  renames or removes under that folder (Python's audit hooks), into ``DIR/writes-rank{R}-{restart}.txt``;
- with ``CNNKIT_TEST_FAIL=kill|raise|hang:RANK:PASS``, on the first start only, after training pass
  ``PASS`` (0-based) of rank ``RANK``: kills itself with SIGKILL, raises a TrainingError, or sleeps.
"""

import os

if os.environ.get("CNNKIT_TEST_LOG") and "RANK" in os.environ and "LOCAL_RANK" in os.environ:
    import atexit
    import hashlib
    import signal
    import sys
    import time
    from pathlib import Path

    LOG = Path(os.environ["CNNKIT_TEST_LOG"])
    RANK = int(os.environ["RANK"])
    RESTART = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    WATCH = os.environ.get("CNNKIT_TEST_WATCH")
    writes: list[str] = []

    def _watch(event: str, args: tuple) -> None:
        if event == "open":
            path, flags = args[0], args[2]
            if not isinstance(flags, int) or not flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                return
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree"):
            path = args[0]
        else:
            return
        if isinstance(path, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(path)).startswith(WATCH):
            writes.append(f"{event} {os.fsdecode(path)}")

    def _save_writes() -> None:
        (LOG / f"writes-rank{RANK}-{RESTART}.txt").write_text("".join(f"{w}\n" for w in writes))

    if WATCH:
        WATCH = os.path.abspath(WATCH)
        sys.addaudithook(_watch)
        atexit.register(_save_writes)

    import cnnkit.train.loop as loop
    from cnnkit.errors import TrainingError

    original = loop.train_one_epoch
    passes = iter(range(10**6))
    kind, *where = (os.environ.get("CNNKIT_TEST_FAIL") or "none:-1:-1").split(":")
    failing = (0, *map(int, where))  # (restart, rank, pass)

    def train_one_epoch(step, *args, **kwargs):
        result = original(step, *args, **kwargs)
        number = next(passes)
        digest = hashlib.sha256()
        for tensor in step.model.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        with open(LOG / "passes.txt", "a") as f:
            f.write(f"{RESTART} {RANK} {number} {digest.hexdigest()[:16]}\n")
        if (RESTART, RANK, number) == failing:
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "hang":
                time.sleep(3600)
            raise TrainingError(f"injected failure after training pass {number}")
        return result

    loop.train_one_epoch = train_one_epoch
