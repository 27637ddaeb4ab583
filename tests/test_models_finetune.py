"""Fine-tuning as fastai does it: the head alone on a frozen body, then all layers with discriminative rates."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from cnnkit import models
from cnnkit.recipe import finetune
from cnnkit.train.callbacks import Callback
from conftest import run_cli


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _AfterFirstEpoch(Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.weights = _snapshot(self.model)
            self.lrs = [group["lr"] for group in self.model.optimizer.param_groups]


def test_groups_put_the_head_first_and_split_the_body():
    model = models.create_model("resnet18", num_classes=3)
    head, later, earlier = finetune.parameter_groups(model)
    assert [id(p) for p in head] == [id(model.net.fc.weight), id(model.net.fc.bias)]
    assert any(p is model.net.conv1.weight for p in earlier) and any(
        p is model.net.layer4[1].conv2.weight for p in later
    )
    assert len(head) + len(later) + len(earlier) == len(list(model.parameters()))


def test_rates_per_group_and_phase():
    model = models.create_model("resnet9", num_classes=3)
    plan = finetune.plan_fine_tune(model, "adam", lr=1e-2, epochs=2, freeze_epochs=1, steps_per_epoch=10,
                                   schedule="constant")  # fmt: skip
    assert plan.epochs == 3
    assert [g["lr"] for g in plan.optimizer.param_groups] == pytest.approx([1e-2, 1e-3, 1e-3])  # head only
    for _ in range(10):
        plan.optimizer.step()
        plan.scheduler.step()
    # All layers: the head at lr/2, the later body 10x and the earlier body 100x lower (fastai's lr_mult).
    assert [g["lr"] for g in plan.optimizer.param_groups] == pytest.approx([5e-3, 5e-4, 5e-5])


def test_resnet18_state_dict_then_one_fine_tuning_step_per_phase(tmp_path, one_thread):
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
    save_file(state, tmp_path / "resnet18.safetensors")
    model = models.create_model("resnet18", num_classes=3, in_channels=3, input_size=32)
    models.weights.load_pretrained(model, tmp_path / "resnet18.safetensors")
    start = _snapshot(model)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])
    probe = _AfterFirstEpoch()
    history = finetune.fine_tune(
        model, (x, y), loss="sparse_categorical_crossentropy", epochs=1,
        freeze_epochs=1, lr=1e-3, batch_size=4, callbacks=[probe], verbose=0,
    )  # fmt: skip
    assert len(history.history["loss"]) == 2 and all(torch.isfinite(torch.tensor(history.history["loss"])))
    frozen = probe.weights
    # Phase 1 (one step): the head and BatchNorm learned; the convolutions did not move.
    assert not torch.equal(frozen["net.fc.weight"], start["net.fc.weight"])
    assert not torch.equal(frozen["net.layer1.0.bn1.weight"], start["net.layer1.0.bn1.weight"])
    assert not torch.equal(frozen["net.bn1.running_mean"], start["net.bn1.running_mean"])
    assert torch.equal(frozen["net.conv1.weight"], start["net.conv1.weight"])
    assert torch.equal(frozen["net.layer4.1.conv2.weight"], start["net.layer4.1.conv2.weight"])
    # Phase 2 (one step): everything learns, and the model ends unfrozen.
    after = _snapshot(model)
    assert not torch.equal(after["net.conv1.weight"], frozen["net.conv1.weight"])
    assert not torch.equal(after["net.layer4.1.conv2.weight"], frozen["net.layer4.1.conv2.weight"])
    assert all(p.requires_grad for p in model.parameters())


def test_cli_fine_tunes_a_trained_model_on_another_data_set(trained_seed, tmp_path):
    _, digits_model = trained_seed  # trained on digits: 10 classes
    out = tmp_path / "run"
    result = run_cli("train", "--model", "seed", "--weights", str(digits_model), "--data", "faces",
                     "--epochs", "2", "--no-report", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 epoch(s) of the new head alone, then 2 of all layers" in result.stdout.replace("\n", " ")
    assert "epoch 3/3" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["weights"] == str(digits_model) and config["freeze_epochs"] == 1  # the default, resolved
    assert [row["epoch"] for row in csv.DictReader((out / "metrics.csv").open())] == ["1", "2", "3"]
    tuned = models.load_model(out / "model.safetensors")
    assert tuned.class_names == ["non_face", "face"] and tuned.layers[-1].units == 2  # the head was replaced


def test_freeze_epochs_needs_weights():
    from cnnkit.errors import ConfigError
    from cnnkit.recipe.config import TrainConfig

    assert TrainConfig().head_only_epochs == 0 and TrainConfig(weights="imagenet").head_only_epochs == 1
    assert TrainConfig(weights="imagenet", freeze_epochs=0).head_only_epochs == 0
    with pytest.raises(ConfigError, match="freeze_epochs needs weights"):
        TrainConfig.from_dict({"freeze_epochs": 2})
    with pytest.raises(ConfigError, match="freeze_epochs must be >= 0"):
        TrainConfig.from_dict({"weights": "imagenet", "freeze_epochs": -1})
