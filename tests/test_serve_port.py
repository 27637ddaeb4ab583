"""``cnnkit serve`` on a port that another program is listening on: one line, exit 1, nothing loaded."""

from __future__ import annotations

import socket

from conftest import run_cli


def test_a_port_in_use_is_one_line_before_the_model_is_loaded(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The model file does not even exist: the port is checked first, so that is not what is said.
        result = run_cli("serve", str(tmp_path / "model.safetensors"), "--port", str(port))
    assert result.returncode == 1, result.stderr
    assert result.stderr == (f"cnnkit: error: port {port} on 127.0.0.1 is already in use (another server?): "
                             f"stop it, or choose another with --port\n")  # fmt: skip
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr
