"""The small-map pass (``cnnkit.kernels.small_maps``): the same values and gradients as ``nn.Conv2d``,
taken only where it applies, and nothing left on the model outside its block."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from cnnkit import models
from cnnkit.kernels import small_maps
from cnnkit.kernels.small_maps import eligible_convs, small_map_convs
from cnnkit.train.loop import Stepper
from cnnkit.train.settings import TrainSettings

CPU = torch.device("cpu")


def _grads(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().clone().requires_grad_()
    conv.zero_grad(set_to_none=True)
    out = conv(x)
    # a loss that weighs every output differently, so a wrong pixel or channel shows in every gradient
    (out * torch.linspace(-1, 2, out.numel()).reshape(out.shape)).sum().backward()
    grads = (x.grad, conv.weight.grad) + ((conv.bias.grad,) if conv.bias is not None else ())
    return (out.detach(), *grads)


def _counting_convolutions(conv: nn.Conv2d) -> list[int]:
    """Count the calls that reach torch's own convolution."""
    calls = []
    own = conv._conv_forward
    conv._conv_forward = lambda *args: calls.append(1) or own(*args)
    return calls


# (channels in, out, kernel, stride, padding, groups, map h, w, bias)
FAST = [
    (576, 144, 1, 1, 0, 1, 1, 1, True),  # squeeze-excite's 1x1 convolution of a pooled map
    (24, 96, 1, 2, 0, 1, 1, 1, False),  # a stride changes nothing on one pixel
    (576, 576, 5, 1, 2, 576, 1, 1, True),  # MobileNet's last depthwise blocks on a 1x1 map
    (288, 288, 5, 2, 2, 288, 2, 2, False),  # 2x2 -> 1x1
    (40, 40, 5, 1, 2, 40, 2, 2, True),  # 2x2 -> 2x2: 16 taps, the largest the pass takes
    (8, 8, 3, 1, 1, 8, 1, 3, True),  # not square: 1x3 -> 1x3
    (8, 8, (3, 1), (1, 2), (1, 0), 8, 2, 1, True),  # a rectangular kernel, two strides
    (6, 6, 3, 1, 0, 6, 3, 3, True),  # no padding: 3x3 -> 1x1
    (6, 6, 2, 1, 1, 6, 1, 1, True),  # even kernel, padding on both sides: 1x1 -> 2x2
]
SLOW = [
    (16, 72, 1, 1, 0, 1, 8, 8, True),  # a 1x1 convolution of an 8x8 map: oneDNN is faster
    (72, 72, 3, 2, 1, 72, 8, 8, True),  # a depthwise one: 64 in x 16 out pixels, too many
    (16, 16, 3, 1, 1, 4, 1, 1, True),  # grouped but not depthwise
    (16, 32, 3, 1, 1, 16, 1, 1, True),  # depthwise with a channel multiplier
    (16, 16, 3, 1, 1, 1, 1, 1, True),  # a full 3x3 convolution
]


def _conv(cin, cout, k, s, p, g, bias):
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, k, s, p, groups=g, bias=bias)


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("case", FAST, ids=[f"fast{i}" for i in range(len(FAST))])
def test_a_small_map_takes_the_product_with_the_convolutions_values_and_gradients(case, memory_format):
    cin, cout, k, s, p, g, h, w, bias = case
    conv = _conv(cin, cout, k, s, p, g, bias).to(memory_format=memory_format)
    x = torch.randn(5, cin, h, w).to(memory_format=memory_format)
    expected = _grads(conv, x)
    calls = _counting_convolutions(conv)
    with small_map_convs(conv, CPU)():
        got = _grads(conv, x)
    assert calls == []  # the product ran, not torch's convolution
    assert got[0].shape == expected[0].shape
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", SLOW, ids=[f"slow{i}" for i in range(len(SLOW))])
def test_other_maps_and_convolutions_run_torchs_convolution(case):
    cin, cout, k, s, p, g, h, w, bias = case
    conv = _conv(cin, cout, k, s, p, g, bias)
    x = torch.randn(2, cin, h, w)
    expected = _grads(conv, x)
    calls = _counting_convolutions(conv)
    with small_map_convs(conv, CPU)():
        got = _grads(conv, x)
    assert calls == [1]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_the_same_layer_takes_the_product_or_not_by_its_inputs_map():
    conv = _conv(8, 8, 3, 1, 1, 8, True)
    calls = _counting_convolutions(conv)
    with small_map_convs(conv, CPU)():
        conv(torch.randn(2, 8, 1, 1))
        conv(torch.randn(2, 8, 8, 8))
        conv(torch.randn(2, 8, 2, 2))
    assert calls == [1]


def test_under_autocast_a_depthwise_convolution_stays_torchs():
    conv = _conv(8, 8, 3, 1, 1, 8, True)
    calls = _counting_convolutions(conv)
    with small_map_convs(conv, CPU)(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(torch.randn(2, 8, 1, 1))
    assert calls == [1] and out.dtype == torch.bfloat16  # as autocast runs it, not promoted to float32


def test_what_is_eligible_and_nothing_off_the_cpu():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 3, padding="same", groups=8),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect"), nn.Conv2d(8, 8, 3, dilation=2, groups=8),
        nn.Conv2d(8, 8, 1, padding=1), nn.Conv2d(8, 8, 3, padding=1),
    )  # fmt: skip
    assert eligible_convs(net) == {net[0]: "pointwise", net[1]: "depthwise"}
    mobilenet = models.create_model("mobilenet_v3_small", num_classes=3, in_channels=3, input_size=32)
    kinds = list(eligible_convs(mobilenet).values())
    assert (kinds.count("pointwise"), kinds.count("depthwise")) == (40, 11)
    assert small_map_convs(mobilenet, torch.device("meta")) is nullcontext
    assert small_map_convs(models.create_model("resnet9", num_classes=3, in_channels=3, input_size=32), CPU) \
        is nullcontext  # fmt: skip


def test_outside_its_block_the_model_is_as_written_and_hooks_fire_inside():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 2, 1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []
    net[0].register_forward_hook(lambda m, args, out: seen.append(out.shape))
    block = small_map_convs(net, CPU)
    with pytest.raises(RuntimeError), block():
        assert "forward" in vars(net[0])
        net(torch.randn(2, 5, 1, 1))  # wrong channels: raises inside the block
    assert all("forward" not in vars(m) for m in net)
    with block():
        net(torch.randn(2, 4, 1, 1))
    assert seen == [torch.Size([2, 4, 1, 1])]
    assert all("forward" not in vars(m) for m in net)
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def _train(monkeypatch, passes: bool) -> dict[str, torch.Tensor]:
    if not passes:
        monkeypatch.setattr("cnnkit.train.loop.small_map_convs", lambda model, device: nullcontext)
    torch.manual_seed(0)
    net = models.create_model("mobilenet_v3_small", num_classes=3, in_channels=3, input_size=32)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)  # plain SGD: its update magnifies no rounding
    step = Stepper(net, nn.functional.cross_entropy, optimizer, TrainSettings(channels_last=True))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        step(torch.rand(8, 3, 32, 32, generator=generator), torch.randint(0, 3, (8,), generator=generator))
    monkeypatch.undo()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_a_training_step_of_mobilenet_on_32x32_images_trains_the_same_weights(monkeypatch):
    calls = []
    original = small_maps._depthwise
    monkeypatch.setitem(small_maps._FORWARDS, "depthwise", lambda conv, x: calls.append(1) or original(conv, x))
    with_pass = _train(monkeypatch, True)
    assert calls  # the pass ran inside the engine's step
    without = _train(monkeypatch, False)
    assert with_pass.keys() == without.keys()
    for name, value in with_pass.items():
        torch.testing.assert_close(value, without[name], rtol=1e-4, atol=1e-5, msg=name)
