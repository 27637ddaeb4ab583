"""The fused Conv2D -> MaxPooling2D -> activation kernel against torch's operators, and its build."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit import kernels, layers, models
from cnnkit.kernels import build

needs_compiler = pytest.mark.skipif(build._compiler() is None, reason="no C compiler: cnnkit runs without the kernel")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty kernel cache and nothing loaded yet in this process."""
    monkeypatch.setenv("CNNKIT_KERNEL_DIR", str(tmp_path / "kernels"))
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setattr(build, "_status", {})
    return tmp_path / "kernels"


def make_block(channels, filters, k, p, padding="valid", activation="relu", size=(28, 28)):
    conv = layers.Conv2D(filters, k, padding=padding, activation=activation)
    conv.build((*size, channels))
    return conv, layers.MaxPooling2D(p)


def keras_order(conv, pool, x):
    """What the two layers compute one after the other: activation, then pooling."""
    return pool(conv(x))


def grads(y, conv, upstream):
    return torch.autograd.grad(y, (conv.conv.weight, conv.conv.bias), upstream)


@needs_compiler
@pytest.mark.parametrize(
    "channels, filters, k, p, padding, activation, size",
    [
        (1, 32, 3, 2, "valid", "relu", (28, 28)),  # the article's first block
        (3, 16, 5, 2, "same", "relu", (27, 30)),  # odd height: the pooling drops the last row
        (4, 24, 3, 3, "valid", "linear", (20, 17)),
        (2, 8, 7, 2, "same", "relu", (9, 9)),
    ],
)
def test_matches_torch(channels, filters, k, p, padding, activation, size):
    torch.manual_seed(0)
    conv, pool = make_block(channels, filters, k, p, padding, activation, size)
    x = torch.randn(5, channels, *size)  # an odd batch: the threads' shares differ
    fused = kernels.fused_conv_pool(conv, pool, x, activation)
    expected = keras_order(conv, pool, x)
    assert fused is not None and fused.shape == expected.shape
    assert fused.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(expected)
    for mine, theirs in zip(grads(fused, conv, upstream), grads(expected, conv, upstream)):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


@needs_compiler
@pytest.mark.parametrize(
    "channels, filters, k, p, padding, activation, size, input_grad",
    [
        (32, 64, 3, 2, "valid", "relu", (13, 13), True),  # the article's second block
        (16, 24, 3, 2, "same", "relu", (11, 14), True),  # odd height: the pooling drops the last row
        (8, 8, 5, 3, "valid", "linear", (17, 16), True),
        (8, 16, 3, 2, "valid", "relu", (12, 12), False),  # input needs no gradient: weights only
    ],
)
def test_sparse_backward_matches_torch(channels, filters, k, p, padding, activation, size, input_grad):
    torch.manual_seed(0)
    conv, pool = make_block(channels, filters, k, p, padding, activation, size)
    x = torch.randn(5, channels, *size).requires_grad_(input_grad)
    assert kernels.supports(conv, pool, x) == "conv_pool_grad"
    fused = kernels.fused_conv_pool(conv, pool, x, activation)
    expected = keras_order(conv, pool, x)
    assert fused is not None
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(expected)
    wrt = (x, conv.conv.weight, conv.conv.bias) if input_grad else (conv.conv.weight, conv.conv.bias)
    mine, theirs = torch.autograd.grad(fused, wrt, upstream), torch.autograd.grad(expected, wrt, upstream)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_which_kernel_each_block_gets():
    first, pool = make_block(1, 32, 3, 2)
    second, _ = make_block(32, 64, 3, 2, size=(13, 13))
    image, features = torch.rand(2, 1, 28, 28), torch.rand(2, 32, 13, 13, requires_grad=True)
    assert kernels.supports(first, pool, image) == "conv_pool"  # the model's input: all in one pass
    assert kernels.supports(second, pool, features) == "conv_pool_grad"  # inside: the backward only
    with torch.no_grad():  # nothing to speed up without a backward pass
        assert kernels.supports(second, pool, features) is None


@needs_compiler
@pytest.mark.parametrize("channels", [1, 8])  # the first-block kernel, the sparse backward
def test_ties_go_to_the_first_cell_as_in_torch(channels):
    # Integer pixels and all-ones weights: sums are exact, so windows tie often, between cells
    # whose patches differ. The gradients then show which cell each window gave its gradient
    # to: it must be the first maximum, as torch's max pooling picks.
    conv, pool = make_block(channels, 8, 3, 2, activation="linear", size=(12, 12))
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
        conv.conv.bias.zero_()
    x = torch.randint(0, 3, (6, channels, 12, 12)).float().requires_grad_(channels == 8)
    fused, expected = kernels.fused_conv_pool(conv, pool, x, "linear"), keras_order(conv, pool, x)
    upstream = torch.randint(-3, 4, expected.shape).float()
    assert torch.equal(fused, expected)
    wrt = (conv.conv.weight, conv.conv.bias) + ((x,) if x.requires_grad else ())
    for mine, theirs in zip(torch.autograd.grad(fused, wrt, upstream), torch.autograd.grad(expected, wrt, upstream)):
        assert torch.equal(mine, theirs)


@needs_compiler
def test_nan_propagates_as_in_torch():
    conv, pool = make_block(1, 8, 3, 2, size=(10, 10))
    x = torch.rand(2, 1, 10, 10)
    x[0, 0, 4, 4] = float("nan")
    fused, expected = kernels.fused_conv_pool(conv, pool, x, "relu"), keras_order(conv, pool, x)
    assert fused.isnan().any()
    torch.testing.assert_close(fused, expected, equal_nan=True)


@needs_compiler
def test_repeatable_and_thread_count_independent():
    torch.manual_seed(1)
    conv, pool = make_block(1, 32, 3, 2)
    x, upstream = torch.rand(17, 1, 28, 28), torch.randn(17, 32, 13, 13)
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (threads, threads, 1):
            torch.set_num_threads(n)
            runs.append(grads(kernels.fused_conv_pool(conv, pool, x, "relu"), conv, upstream))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))  # the same threads: bit for bit
    for a, b in zip(runs[0], runs[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # another summation order


@pytest.mark.parametrize(
    "change",
    ["strides", "dilation", "groups", "channels", "filters", "pool_strides", "pool_same", "pool_rect",
     "needs_grad", "float64", "autocast"],
)  # fmt: skip
def test_refuses_what_it_does_not_compute(change):
    conv_args = {"strides": 2} if change == "strides" else {"dilation_rate": 2} if change == "dilation" else {}
    if change == "groups":
        conv_args["groups"] = 2
    channels = 5 if change == "channels" else 2
    conv = layers.Conv2D(12 if change == "filters" else 16, 3, activation="relu", **conv_args)
    conv.build((16, 16, channels))
    pool = {
        "pool_strides": layers.MaxPooling2D(2, strides=1),
        "pool_same": layers.MaxPooling2D(2, padding="same"),
        "pool_rect": layers.MaxPooling2D((2, 3)),
    }.get(change, layers.MaxPooling2D(2))
    x = torch.rand(2, channels, 16, 16, dtype=torch.float64 if change == "float64" else torch.float32)
    x.requires_grad_(change == "needs_grad")
    with torch.autocast("cpu", enabled=change == "autocast"):
        assert not kernels.supports(conv, pool, x)
        assert kernels.fused_conv_pool(conv, pool, x, "relu") is None


def article_model():
    model = models.Sequential([
        layers.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train_briefly(digits):
    (x, y), _ = digits
    torch.manual_seed(0)
    model = article_model()
    model.fit(x[:256], y[:256], epochs=2, batch_size=64, shuffle=False, verbose=0)
    return model


@needs_compiler
def test_sequential_trains_through_the_kernel_as_without_it(digits, fresh, monkeypatch):
    fused = train_briefly(digits)
    loaded = sorted(name.split("-")[0] for name, state in kernels.status().items() if state.startswith("loaded"))
    assert loaded == ["conv_pool", "conv_pool_grad"], kernels.status()  # the first block, the second
    monkeypatch.setenv("CNNKIT_NATIVE", "0")
    monkeypatch.setattr(build, "_loaded", {})
    plain = train_briefly(digits)
    assert "CNNKIT_NATIVE=0" in " ".join(kernels.status().values())
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    (_, _), (xt, yt) = digits
    np.testing.assert_allclose(fused.predict(xt[:32], verbose=0), plain.predict(xt[:32], verbose=0), atol=1e-4)


def test_without_a_compiler_training_runs_on_torch(digits, fresh, monkeypatch):
    monkeypatch.setattr(build, "_compiler", lambda: None)
    model = train_briefly(digits)
    assert model.history.history["loss"][-1] < model.history.history["loss"][0]
    assert set(kernels.status().values()) == {"off: no C compiler found (set $CC, or install gcc or clang)"}


@needs_compiler
def test_a_failed_build_is_reported_and_leaves_nothing(fresh):
    # CO=12 trips the source's own #error: the compiler's message is kept, no file is left behind.
    assert build.load("conv_pool.c", {"K": 3, "CIN": 1, "CO": 12, "P": 2, "H": 8, "W": 8}) is None
    (state,) = build.status().values()
    assert state.startswith("off: the build failed") and "multiple of 8" in state
    assert not fresh.exists() or not any(fresh.iterdir())


@needs_compiler
def test_a_cached_library_is_reused(fresh, monkeypatch):
    shape = {"K": 3, "CIN": 1, "CO": 8, "P": 2, "H": 10, "W": 10}
    assert build.load("conv_pool.c", shape) is not None
    assert len(list(fresh.glob("conv_pool-*.so"))) == 1
    monkeypatch.setattr(build, "_loaded", {})  # as a new process would
    monkeypatch.setattr(build, "_build", lambda *a: pytest.fail("rebuilt a cached kernel"))
    assert build.load("conv_pool.c", shape) is not None


@needs_compiler
def test_a_damaged_cached_library_is_rebuilt(fresh):
    # e.g. a cache folder shared with another machine, or a disk error: not loadable, so rebuilt
    shape = {"K": 3, "CIN": 1, "CO": 8, "P": 3, "H": 11, "W": 11}
    path = build._library_path(build._name("conv_pool.c", shape), build._HERE / "conv_pool.c", shape, build._compiler())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")
    conv, pool = make_block(1, 8, 3, 3, size=(11, 11))
    x = torch.rand(3, 1, 11, 11)
    torch.testing.assert_close(kernels.fused_conv_pool(conv, pool, x, "relu"), keras_order(conv, pool, x))
    assert build.status()[build._name("conv_pool.c", shape)] == f"loaded {path}"
    assert path.stat().st_size > 1000


@needs_compiler
def test_a_library_that_disagrees_with_torch_is_not_used(fresh, monkeypatch):
    # Stands in for a miscompiled library: the check's reference computes something else.
    from cnnkit.kernels import conv_pool

    monkeypatch.setattr(conv_pool.F, "max_pool2d", lambda x, p: F.avg_pool2d(x, p))
    conv, pool = make_block(1, 8, 3, 2, size=(12, 12))
    assert kernels.fused_conv_pool(conv, pool, torch.rand(2, 1, 12, 12), "relu") is None
    assert list(kernels.status().values()) == ["off: it failed its check against torch"]


@needs_compiler
def test_a_check_that_raises_turns_the_kernel_off_and_the_block_runs_on_torch(fresh, monkeypatch):
    from cnnkit.kernels import conv_pool

    def broken(*args):
        raise RuntimeError("reference broke")

    monkeypatch.setattr(conv_pool.F, "max_pool2d", broken)
    conv, pool = make_block(1, 8, 3, 2, size=(12, 12))
    assert kernels.fused_conv_pool(conv, pool, torch.rand(2, 1, 12, 12), "relu") is None
    assert list(kernels.status().values()) == ["off: its check against torch raised RuntimeError: reference broke"]


def layer_by_layer(model, x):
    """The model's output with every layer run on its own, on torch's operators (a hook forces that)."""
    handle = model.layers[0].register_forward_hook(lambda *args: None)
    try:
        return model(x)
    finally:
        handle.remove()


@needs_compiler
@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad])
@pytest.mark.parametrize("training", [False, True])
def test_predictions_run_the_first_block_kernel_in_any_grad_mode(fresh, mode, training):
    # predict/evaluate (eval mode), or a model left in training mode, may be the first call:
    # the kernel is built and checked then, and its check needs gradients whatever the mode.
    model = models.create_model("seed").train(training)
    x = torch.rand(5, 1, 28, 28)
    with mode():
        fast = model(x)
        plain = layer_by_layer(model, x)
    assert [name.split("-")[0] for name, state in kernels.status().items() if state.startswith("loaded")] == [
        "conv_pool"
    ], kernels.status()  # without gradients the deeper blocks' forward is torch's anyway
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


@needs_compiler
def test_a_hook_on_a_layer_or_on_a_module_inside_one_sees_its_output(fresh):
    # Feature maps and Grad-CAM hook a Keras layer or, by its torch name, the nn.Conv2d inside it.
    model = models.create_model("seed").eval()
    seen = []
    for module in (model.layers[0], model.layers[0].conv):
        handle = module.register_forward_hook(lambda m, inputs, out: seen.append((m, tuple(out.shape))))
        with torch.no_grad():
            model(torch.rand(2, 1, 28, 28))
        handle.remove()
    assert seen == [(model.layers[0], (2, 32, 26, 26)), (model.layers[0].conv, (2, 32, 26, 26))]


@needs_compiler
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_a_traced_graph_runs_the_layers_not_the_kernels(fresh):
    # TorchScript and ONNX export trace the model: a ctypes call cannot be in their graphs.
    model = models.create_model("seed").eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.rand(3, 1, 28, 28), check_trace=False)  # (the check runs eagerly)
        assert kernels.status() == {}  # nothing was even built while tracing
        assert str(traced.inlined_graph).count("aten::_convolution") == 3
        x = torch.rand(4, 1, 28, 28)
        torch.testing.assert_close(traced(x), model(x), rtol=1e-4, atol=1e-5)  # the eager call: the kernel
    assert kernels.status()


@needs_compiler
def test_an_unwritable_cache_builds_for_the_process_only(fresh, monkeypatch, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # so the cache folder cannot be created
    monkeypatch.setenv("CNNKIT_KERNEL_DIR", str(blocked / "kernels"))
    monkeypatch.setattr(build, "_private", None)
    conv, pool = make_block(1, 8, 3, 2, size=(10, 10))
    x = torch.rand(3, 1, 10, 10)
    torch.testing.assert_close(kernels.fused_conv_pool(conv, pool, x, "relu"), keras_order(conv, pool, x))
    (state,) = kernels.status().values()
    assert state.startswith(f"loaded {build._private}")
