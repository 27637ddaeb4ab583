"""The training step's autocast: bf16 on the CPU keeps depthwise convolutions in float32, nothing else changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit import models
from cnnkit.train.loop import Stepper
from cnnkit.train.precision import float32_depthwise_convs, step_autocast
from cnnkit.train.settings import TrainSettings

CPU = torch.device("cpu")


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # a plain convolution: bf16 under autocast
        nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8),  # depthwise: kept in float32
        nn.Conv2d(8, 16, 3, padding=1, groups=2),  # grouped, not depthwise: bf16
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip


def _output_dtypes(net):
    seen = {}
    for i, m in enumerate(net):
        m.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(i, out.dtype))
    return seen


def test_only_depthwise_convolutions_are_kept():
    net = _net()
    assert float32_depthwise_convs(net) == [net[1]]
    mobilenet = models.create_model("mobilenet_v3_small", num_classes=3, in_channels=3, input_size=32)
    assert len(float32_depthwise_convs(mobilenet)) == 11  # one per inverted-residual block
    assert float32_depthwise_convs(models.create_model("resnet9", num_classes=3, in_channels=3, input_size=32)) == []


def test_bf16_on_the_cpu_runs_the_depthwise_conv_in_float32_and_leaves_no_hooks():
    net = _net()
    seen = _output_dtypes(net)
    hooks_before = {id(m): (len(m._forward_pre_hooks), len(m._forward_hooks)) for m in net}
    with step_autocast(net, CPU, torch.bfloat16)():
        logits = net(torch.rand(4, 3, 16, 16))
        assert torch.is_autocast_enabled("cpu")  # back on after the depthwise conv
    assert (seen[0], seen[1], seen[2], seen[5]) == (torch.bfloat16, torch.float32, torch.bfloat16, torch.bfloat16)
    logits.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    assert not torch.is_autocast_enabled("cpu")
    assert {id(m): (len(m._forward_pre_hooks), len(m._forward_hooks)) for m in net} == hooks_before


def test_other_precisions_and_compile_autocast_as_torch_does():
    net = _net()
    seen = _output_dtypes(net)
    x = torch.rand(2, 3, 16, 16)
    with step_autocast(net, CPU, None)():  # fp32: no autocast at all
        net(x)
    assert set(seen.values()) == {torch.float32}
    with step_autocast(net, CPU, torch.bfloat16, keep_depthwise=False)():  # under torch.compile
        net(x)
    assert seen[1] == torch.bfloat16
    with step_autocast(net, CPU, torch.float16)():  # fp16: no such oneDNN trap known, plain autocast
        net(x)
    assert seen[1] == torch.float16


def test_a_forward_that_raises_leaves_autocast_off_and_no_hooks():
    net = _net()
    with pytest.raises(RuntimeError), step_autocast(net, CPU, torch.bfloat16)():
        net(torch.rand(2, 5, 16, 16))  # wrong channels: the first conv raises
    assert not torch.is_autocast_enabled("cpu") and not net[1]._forward_pre_hooks and not net[1]._forward_hooks
    with step_autocast(net, CPU, torch.bfloat16)():  # and the next step works as usual
        assert net(torch.rand(2, 3, 16, 16)).dtype == torch.bfloat16


def test_a_bf16_training_step_keeps_the_depthwise_conv_in_float32():
    net = _net()
    seen = _output_dtypes(net)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    step = Stepper(net, nn.functional.cross_entropy, optimizer, TrainSettings(precision="bf16", channels_last=True))
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 3
    first = step(x, y)[0].item()
    assert (seen[0], seen[1]) == (torch.bfloat16, torch.float32)
    for _ in range(20):
        last = step(x, y)[0].item()
    assert last < first and len(net[1]._forward_hooks) == 1 and not net[1]._forward_pre_hooks  # the test's own
