"""Several workers on one port: each worker uvicorn's supervisor starts gets a listening socket of its own
in one SO_REUSEPORT group, so the kernel spreads connections over the workers (a shared socket let the first
worker to wake accept them all)."""

from __future__ import annotations

import selectors
import socket
import sys

import pytest
import uvicorn

from cnnkit.serve.workers import SocketPerWorker

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections on Linux"
)


def test_each_worker_gets_its_own_socket_on_one_port_and_connections_are_spread():
    supervisor = SocketPerWorker(uvicorn.Config("cnnkit.serve.server:app_from_env", host="127.0.0.1", port=0))
    first, second = supervisor.sockets[0], supervisor.sockets[0]  # what two workers would be given
    clients: list[socket.socket] = []
    try:
        assert first is not second and first.getsockname() == second.getsockname() == ("127.0.0.1", supervisor.port)
        for sock in (first, second):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1 and sock.get_inheritable()
            sock.listen(64)
            sock.setblocking(False)
        clients += [socket.create_connection(("127.0.0.1", supervisor.port)) for _ in range(32)]
        accepted = {first.fileno(): 0, second.fileno(): 0}
        with selectors.DefaultSelector() as selector:
            for sock in (first, second):
                selector.register(sock, selectors.EVENT_READ)
            while sum(accepted.values()) < len(clients):
                for key, _ in selector.select(timeout=10):
                    connection, _ = key.fileobj.accept()
                    connection.close()
                    accepted[key.fileobj.fileno()] += 1
        assert all(n > 0 for n in accepted.values()), accepted  # each worker's socket got connections
    finally:
        for sock in (first, second, *clients):
            sock.close()


def test_the_supervisor_of_a_model_with_its_export_cached_starts_the_workers_without_torch(trained_seed, tmp_path):
    """Before any worker starts, the parent decides the backend; with a valid export cached (and no GPU on
    the machine) it finds it without importing torch (2 s), which each worker then imports for itself."""
    import os
    import shutil
    import subprocess

    from cnnkit.inference import load_predictor
    from cnnkit.onnx_predictor import surely_cpu_only
    from conftest import SRC

    if not surely_cpu_only():
        pytest.skip("a machine with a GPU driver: auto means PyTorch on it, which the parent asks torch about")
    path = tmp_path / "model.safetensors"
    shutil.copy(trained_seed[1], path)
    assert load_predictor(path, "onnx").backend == "onnx"  # exports it and caches the export next to the file
    probe = (
        "import json, os, sys\n"
        "from cnnkit.serve import workers\n"
        "def started(app, count, **options):  # instead of starting them: what the parent held and told them\n"
        "    spec = json.loads(os.environ['CNNKIT_SERVE_SPEC'])\n"
        "    print('torch' in sys.modules, 'onnx' in sys.modules, count, spec['config']['backend'])\n"
        "workers.run_workers = started\n"
        "from cnnkit.cli import main\n"
        f"sys.exit(main(['serve', {str(path)!r}, '--workers', '2', '--port', '0']))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(SRC)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False False 2 onnx"
