"""The fused Conv2D -> MaxPooling2D -> activation kernels against torch's operators, their build, and the
``kernels.fuse`` pass that feeds them a model's blocks (while the model's own forward runs every layer)."""

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


def through_kernel(conv, pool, x, activation):
    """The block through the kernel, as the pass calls it: the layers' settings as integers, or None."""
    arguments = kernels.kernel_arguments(conv, pool)
    if arguments is None or activation not in ("relu", "linear"):
        return None
    return kernels.fused_conv_pool(x, conv.conv.weight, conv.conv.bias, relu=activation == "relu", **arguments)


def kernel_for(conv, pool, x):
    """Which kernel computes the block for input ``x`` (None: the pass or the kernel refuses it)."""
    arguments = kernels.kernel_arguments(conv, pool)
    return None if arguments is None else kernels.supports(x, conv.conv.weight, arguments["pool"])


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
    fused = through_kernel(conv, pool, x, activation)
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
    assert kernel_for(conv, pool, x) == "conv_pool_grad"
    fused = through_kernel(conv, pool, x, activation)
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
    assert kernel_for(first, pool, image) == "conv_pool"  # the model's input: all in one pass
    assert kernel_for(second, pool, features) == "conv_pool_grad"  # inside: the backward only
    with torch.no_grad():  # nothing to speed up without a backward pass
        assert kernel_for(second, pool, features) is None


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
    fused, expected = through_kernel(conv, pool, x, "linear"), keras_order(conv, pool, x)
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
    fused, expected = through_kernel(conv, pool, x, "relu"), keras_order(conv, pool, x)
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
            runs.append(grads(through_kernel(conv, pool, x, "relu"), conv, upstream))
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
        assert not kernel_for(conv, pool, x)
        assert through_kernel(conv, pool, x, "relu") is None


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
    torch.testing.assert_close(through_kernel(conv, pool, x, "relu"), keras_order(conv, pool, x))
    assert build.status()[build._name("conv_pool.c", shape)] == f"loaded {path}"
    assert path.stat().st_size > 1000


@needs_compiler
def test_a_library_that_disagrees_with_torch_is_not_used(fresh, monkeypatch):
    # Stands in for a miscompiled library: the check's reference computes something else.
    from cnnkit.kernels import conv_pool

    monkeypatch.setattr(conv_pool.F, "max_pool2d", lambda x, p: F.avg_pool2d(x, p))
    conv, pool = make_block(1, 8, 3, 2, size=(12, 12))
    assert through_kernel(conv, pool, torch.rand(2, 1, 12, 12), "relu") is None
    assert list(kernels.status().values()) == ["off: it failed its check against torch"]


@needs_compiler
def test_a_check_that_raises_turns_the_kernel_off_and_the_block_runs_on_torch(fresh, monkeypatch):
    from cnnkit.kernels import conv_pool

    def broken(*args):
        raise RuntimeError("reference broke")

    monkeypatch.setattr(conv_pool.F, "max_pool2d", broken)
    conv, pool = make_block(1, 8, 3, 2, size=(12, 12))
    assert through_kernel(conv, pool, torch.rand(2, 1, 12, 12), "relu") is None
    assert list(kernels.status().values()) == ["off: its check against torch raised RuntimeError: reference broke"]


def loaded_kernels():
    return sorted(name.split("-")[0] for name, state in kernels.status().items() if state.startswith("loaded"))


@needs_compiler
@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad])
@pytest.mark.parametrize("training", [False, True])
def test_predictions_run_the_first_block_kernel_in_any_grad_mode(fresh, mode, training):
    # predict/evaluate (eval mode), or a model left in training mode, may be the first call:
    # the kernel is built and checked then, and its check needs gradients whatever the mode.
    model = models.create_model("seed").train(training)
    x = torch.rand(5, 1, 28, 28)
    with mode():
        plain = model(x)  # the model as written: every layer on torch's operators
        assert kernels.status() == {}
        fast = kernels.fuse(model)(x)
    # without gradients the deeper blocks' forward is torch's anyway
    assert loaded_kernels() == ["conv_pool"], kernels.status()
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
            kernels.fuse(model)(torch.rand(2, 1, 28, 28))  # fused while hooked: the hooked block runs as written
        handle.remove()
    assert seen == [(model.layers[0], (2, 32, 26, 26))] * 2 + [(model.layers[0].conv, (2, 32, 26, 26))] * 2


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
        torch.testing.assert_close(traced(x), kernels.fuse(model)(x), rtol=1e-4, atol=1e-5)  # the fast path: the kernel
    assert kernels.status()


def by_hand(model, x):
    """The model layer by layer in torch.nn.functional: what each of its modules outputs."""
    out, h = {}, x
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):  # (all 'valid', stride 1 here)
            out[layer.conv] = z = F.conv2d(h, layer.conv.weight, layer.conv.bias)
        elif isinstance(layer, layers.MaxPooling2D):
            z = F.max_pool2d(h, layer.pool_size)
        elif isinstance(layer, layers.Flatten):
            z = h.permute(0, 2, 3, 1).flatten(1)  # Keras' (H, W, C) order
        else:
            out[layer.linear] = z = F.linear(h, layer.linear.weight, layer.linear.bias)
        if layer is model.layers[-1]:  # the logits: forward does not call the last layer's softmax
            return out
        h = torch.relu(z) if layer.activation_name == "relu" else z
        out[layer] = out[layer.activation] = h


@needs_compiler
def test_a_hook_on_any_module_sees_the_plain_forward_while_training_ran_the_kernels(digits, fresh):
    model = train_briefly(digits)  # fit: the fused module, through both kernels
    assert loaded_kernels() == ["conv_pool", "conv_pool_grad"], kernels.status()
    (_, _), (xt, _) = digits
    x = torch.from_numpy(xt[:6]).permute(0, 3, 1, 2).contiguous()
    model.eval()
    with torch.no_grad():
        expected = by_hand(model, x)
        fused = kernels.fuse(model)
        assert fused.blocks == ("conv2d+max_pooling2d", "conv2d_1+max_pooling2d_1")
        torch.testing.assert_close(fused(x), expected[model.layers[-1].linear], rtol=1e-4, atol=1e-5)
        # every module but the model, its ModuleList, the last layer and its softmax
        assert len(expected) == len(list(model.modules())) - 4
        for name, module in model.named_modules():
            if module is model or module is model.layers:
                continue
            seen = []
            handle = module.register_forward_hook(lambda m, inputs, out, seen=seen: seen.append(out))
            try:
                logits = model(x)
                hooked = kernels.fuse(model)(x)  # fused while hooked: that block (if any) runs as written
            finally:
                handle.remove()
            torch.testing.assert_close(hooked, logits, rtol=1e-4, atol=1e-5)
            if module in expected:
                assert len(seen) == 2, name
                for out in seen:
                    torch.testing.assert_close(out, expected[module], rtol=1e-4, atol=1e-5, msg=name)
            else:
                assert seen == [], name


@needs_compiler
def test_fit_with_a_hooked_block_trains_it_as_written_and_fuses_the_rest(digits, fresh):
    # A user's hook on the second convolution fires in every training step and validation pass;
    # the first block still goes through its kernel.
    (x, y), _ = digits
    torch.manual_seed(0)
    model = article_model()
    calls = []
    model.layers[2].conv.register_forward_hook(lambda m, inputs, out: calls.append(tuple(out.shape)))
    model.fit(x[:128], y[:128], epochs=1, batch_size=64, validation_data=(x[128:160], y[128:160]), verbose=0)
    assert calls == [(64, 64, 11, 11), (64, 64, 11, 11), (32, 64, 11, 11)]
    assert loaded_kernels() == ["conv_pool"], kernels.status()  # the hooked block's kernel was never asked for


def test_fuse_shares_the_models_parameters_and_trains_them():
    torch.manual_seed(0)
    model = article_model().train()
    fused = kernels.fuse(model)
    assert fused is not model
    assert all(a is b for a, b in zip(fused.parameters(), model.parameters(), strict=True))
    model.eval()
    assert not fused.training  # one flag: the model's
    fused.train()
    assert model.training
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    params = list(model.parameters())
    plain = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    mine = torch.autograd.grad(F.cross_entropy(fused(x), y), params)
    for a, b in zip(mine, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(fused(x), y).backward()
    optimizer.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, params))


def test_fuse_returns_the_model_where_nothing_applies(monkeypatch):
    from torch import nn

    wrapped = models.Model(nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                         nn.Linear(8 * 13 * 13, 2)), input_shape=(28, 28, 1))  # fmt: skip
    dense = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    unbuilt = models.Sequential([layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
                                 layers.Dense(2)])  # fmt: skip
    hooked = article_model()
    hooked.register_forward_pre_hook(lambda *args: None)  # a hook on the model sees the model's own call
    for model in (wrapped, dense, unbuilt, hooked, nn.Linear(2, 2)):
        assert kernels.fuse(model) is model
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        model = article_model()
        assert kernels.fuse(model) is model  # a global hook fires on every module: nothing is fused
    finally:
        handle.remove()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert kernels.fuse(model) is model


def test_off_the_cpu_the_blocks_run_pool_first_and_no_kernel_is_built():
    model = article_model().to("meta")  # as on a GPU: parameters off the CPU
    built = set(kernels.status())
    fused = kernels.fuse(model)
    assert fused is not model and fused.blocks
    assert fused(torch.empty(2, 1, 28, 28, device="meta")).shape == (2, 10)
    assert set(kernels.status()) == built
    weight = torch.randn(8, 1, 3, 3, device="meta")  # a CPU input with weights elsewhere: no kernel either
    assert kernels.supports(torch.rand(2, 1, 12, 12), weight, 2) is None


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_a_pooling_with_its_own_activation_keeps_the_order_as_written(activation):
    # relu(sigmoid(max(z))) is not sigmoid(max(relu(z))): such a pooling is no pool-first block.
    torch.manual_seed(0)
    model = models.Sequential([
        layers.Input((12, 12, 1)), layers.Conv2D(8, 3, activation=activation), layers.MaxPooling2D(2, activation="sigmoid"),
        layers.Flatten(), layers.Dense(3),
    ])  # fmt: skip
    x = torch.randn(4, 1, 12, 12)
    fused = kernels.fuse(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x))


@needs_compiler
def test_the_kernel_takes_tensors_and_integers():
    torch.manual_seed(0)
    x, weight, bias = torch.rand(3, 2, 11, 12), torch.randn(16, 2, 4, 4), torch.randn(16)
    padding = (1, 2, 1, 2)  # 'same' for a 4x4 kernel: the odd pixel at the bottom/right
    assert kernels.supports(x, weight, 2) == "conv_pool"
    y = kernels.fused_conv_pool(x, weight, bias, 2, padding, relu=True)
    torch.testing.assert_close(y, torch.relu(F.max_pool2d(F.conv2d(F.pad(x, padding), weight, bias), 2)))
    assert kernels.fused_conv_pool(x, weight[:, :1], bias, 2) is None  # groups: the channels do not match
    assert kernels.fused_conv_pool(x, weight, None, 4) is None  # a 4x4 pooling: not one it computes


@needs_compiler
def test_an_unwritable_cache_builds_for_the_process_only(fresh, monkeypatch, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # so the cache folder cannot be created
    monkeypatch.setenv("CNNKIT_KERNEL_DIR", str(blocked / "kernels"))
    monkeypatch.setattr(build, "_private", None)
    conv, pool = make_block(1, 8, 3, 2, size=(10, 10))
    x = torch.rand(3, 1, 10, 10)
    torch.testing.assert_close(through_kernel(conv, pool, x, "relu"), keras_order(conv, pool, x))
    (state,) = kernels.status().values()
    assert state.startswith(f"loaded {build._private}")
