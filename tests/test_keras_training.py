"""keras.optimizers (+ schedules, clipping), keras.losses, keras.metrics and keras.callbacks with Keras' semantics."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

import cnnkit as keras
from cnnkit import layers
from cnnkit.errors import CnnkitError


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.random((n, 6, 6, 1)) * 0.2 + y[:, None, None, None] * 0.3).astype(np.float32)
    return x, y


def _model(units=3, activation="softmax"):
    keras.utils.set_random_seed(0)
    return keras.models.Sequential(
        [layers.Input((6, 6, 1)), layers.Flatten(), layers.Dense(units, activation=activation)]
    )


def test_schedules_follow_keras_formulas():
    s = keras.optimizers.schedules
    assert s.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)(20) == pytest.approx(0.025)
    assert s.ExponentialDecay(0.1, 10, 0.5, staircase=True)(19) == pytest.approx(0.05)
    cosine = s.CosineDecay(0.0, decay_steps=10, warmup_target=1.0, warmup_steps=5, alpha=0.1)
    assert [cosine(0), cosine(5)] == pytest.approx([0.0, 1.0]) and cosine(2) == pytest.approx(0.4)
    assert cosine(10) == pytest.approx(0.1 + 0.9 * 0.5) and cosine(100) == pytest.approx(0.1)
    piecewise = s.PiecewiseConstantDecay([2, 4], [1.0, 0.5, 0.1])
    assert [piecewise(i) for i in (0, 2, 3, 4, 5)] == [1.0, 1.0, 0.5, 0.5, 0.1]


def test_a_schedule_sets_every_steps_rate_and_travels_in_the_optimizer_state():
    x, y = _data(64)
    model = _model()
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=1, decay_rate=0.5)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True),
                  loss="sparse_categorical_crossentropy")  # fmt: skip
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # 4 steps: rates 1e-2 * 0.5**(0..3)
    group = model.optimizer.param_groups[0]
    assert group["iterations"] == 4 and group["lr"] == pytest.approx(1e-2 * 0.5**3)
    assert "iterations" in model.optimizer.state_dict()["param_groups"][0]  # so a backup or resume continues it
    assert model.compile_config()["optimizer"]["learning_rate"]["class_name"] == "ExponentialDecay"


def test_clipnorm_clips_each_gradient_and_clipvalue_each_element():
    for kwargs, check in (({"clipnorm": 0.01}, lambda g: all(float(t.norm()) <= 0.01 + 1e-6 for t in g)),
                          ({"clipvalue": 1e-3}, lambda g: all(float(t.abs().max()) <= 1e-3 + 1e-9 for t in g))):  # fmt: skip
        model = _model()
        opt = keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.8, **kwargs).build(model.parameters())
        loss = model(torch.rand(4, 1, 6, 6)).square().sum() * 100
        loss.backward()
        opt.step()
        assert check([p.grad for p in model.parameters()])
    with pytest.raises(CnnkitError, match="not both"):
        keras.optimizers.Adam(clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(CnnkitError, match="--ema"):
        keras.optimizers.AdamW(use_ema=True)
    with pytest.raises(AttributeError, match="keras.optimizers.Lion is not in cnnkit"):
        keras.optimizers.Lion  # noqa: B018


def test_losses_classes_functions_and_label_smoothing():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    smooth = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.3)
    target = torch.tensor([[1.0, 0.0, 0.0]]) * 0.7 + 0.1
    assert float(smooth(logits, torch.tensor([[1.0, 0, 0]]))) == pytest.approx(
        float(-(target * logits.log_softmax(1)).sum()), rel=1e-5)  # fmt: skip
    bce = keras.losses.get(keras.losses.binary_crossentropy)  # the function form, as compile gets it
    assert isinstance(bce, keras.losses.BinaryCrossentropy)
    p = torch.tensor([[0.3]])
    assert float(keras.losses.BinaryCrossentropy(label_smoothing=0.2)(p, torch.tensor([1]))) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(p, torch.tensor([[0.9]]))))  # fmt: skip
    model = _model()
    with pytest.raises(CnnkitError, match="expects sigmoid probabilities .* applies softmax"):
        model.compile(optimizer="adam", loss="binary_crossentropy")


def test_metrics_in_compile_by_name_and_object():
    x, y = _data(48)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.05), loss="sparse_categorical_crossentropy",
                  metrics=[keras.metrics.SparseCategoricalAccuracy(), keras.metrics.SparseTopKCategoricalAccuracy(k=2),
                           "accuracy"], jit_compile=True)  # fmt: skip
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert set(history.history) == {"loss", "sparse_categorical_accuracy", "sparse_top_k_categorical_accuracy",
                                    "accuracy"}  # fmt: skip
    results = model.evaluate(x, y, verbose=0, return_dict=True)
    assert results["sparse_top_k_categorical_accuracy"] >= results["accuracy"]
    with pytest.raises(AttributeError, match="keras.metrics.AUC is not in cnnkit: `cnnkit evaluate"):
        keras.metrics.AUC  # noqa: B018


def test_early_stopping_restores_the_best_epoch_and_reduce_lr_on_plateau_lowers_the_rate():
    x, y = _data(32)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    losses = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.95])
    snapshots = []

    class FakeVal(keras.callbacks.Callback):  # a validation loss whose best epoch is known
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(losses)
            snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})

    stop = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    plateau = keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=1, min_lr=1e-3)
    history = model.fit(x, y, epochs=6, verbose=0, callbacks=[FakeVal(), stop, plateau])
    assert len(history.history["loss"]) == 4 and stop.stopped_epoch == 3  # best at epoch 2, two without gain
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][key])  # the best epoch's weights
    assert history.history["learning_rate"] == pytest.approx([1e-2, 1e-2, 1e-2, 5e-3])


def test_learning_rate_scheduler_csv_logger_and_lambda(tmp_path):
    x, y = _data(32)
    model = _model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    seen = []
    model.fit(x, y, epochs=3, verbose=0, callbacks=[
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch == 0 else lr * 0.1),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch)),
        keras.callbacks.CSVLogger(tmp_path / "log.csv"),
    ])  # fmt: skip
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([1e-2, 1e-3, 1e-4]) and seen == [0, 1, 2]
    with pytest.raises(CnnkitError, match="once an epoch"):
        keras.callbacks.LambdaCallback(on_batch_end=print)


def test_model_checkpoint_formats_the_name_and_keeps_only_the_best(tmp_path):
    x, y = _data(32)
    model = _model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = str(tmp_path / "ckpt-{epoch:02d}-{loss:.2f}.safetensors")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[keras.callbacks.ModelCheckpoint(path, monitor="loss")])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].startswith("ckpt-01-") and names[1].startswith("ckpt-02-")
    assert keras.models.load_model(tmp_path / names[1]).count_params() == model.count_params()


def test_backup_and_restore_resumes_an_interrupted_fit_where_it_stopped(tmp_path):
    x, y = _data(32)

    def run(epochs_before_crash=None):
        model = _model()
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        callbacks = [keras.callbacks.BackupAndRestore(tmp_path / "backup")]
        if epochs_before_crash is not None:

            class Crash(keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    if epoch == epochs_before_crash:
                        raise KeyboardInterrupt

            callbacks.append(Crash())
        return model, model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=callbacks)

    with pytest.raises(KeyboardInterrupt):
        run(epochs_before_crash=2)
    assert (tmp_path / "backup" / "resume.safetensors").exists()
    resumed, history = run()
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only, as Keras' resumed history
    assert not (tmp_path / "backup").exists()  # deleted once fit completes
    uninterrupted, _ = run()
    for a, b in zip(resumed.state_dict().values(), uninterrupted.state_dict().values()):
        torch.testing.assert_close(a, b)  # the same weights as a fit that was never interrupted


def test_a_callback_with_a_per_batch_hook_is_refused_not_ignored():
    class EveryBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    model = _model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = _data()
    with pytest.raises(
        CnnkitError, match=r"EveryBatch defines on_train_batch_end: cnnkit calls callbacks once an epoch"
    ):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[EveryBatch()])


def test_terminate_on_nan_and_unknown_callbacks():
    stop = keras.callbacks.TerminateOnNaN()
    stop.set_model(_model())
    stop.on_epoch_end(0, {"loss": math.nan})
    assert stop.model.stop_training
    with pytest.raises(AttributeError, match=r"keras\.callbacks\.SwapEMAWeights is not in cnnkit: `cnnkit train --ema"):
        keras.callbacks.SwapEMAWeights  # noqa: B018


def test_a_model_made_double_fits_evaluates_and_predicts_in_float64():
    x, y = _data()
    results = {}
    for dtype in (torch.float32, torch.float64):
        model = _model().to(dtype)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=2, verbose=0, shuffle=False, validation_data=(x, y))
        assert all(p.dtype == dtype for p in model.parameters())
        probs = model.predict(x, verbose=0)
        assert probs.dtype == (np.float64 if dtype == torch.float64 else np.float32)
        results[dtype] = (history.history["val_loss"][-1], model.evaluate(x, y, verbose=0)[0], probs)
    (val32, loss32, p32), (val64, loss64, p64) = results[torch.float32], results[torch.float64]
    assert val64 == pytest.approx(val32, rel=1e-5) and loss64 == pytest.approx(loss32, rel=1e-5)
    np.testing.assert_allclose(p64, p32, atol=1e-5)
