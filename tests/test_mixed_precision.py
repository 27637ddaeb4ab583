"""keras.mixed_precision: a model made under a mixed policy trains its steps in 16 bits, float32 weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnnkit as keras
from cnnkit import layers
from cnnkit.errors import CnnkitError

mp = keras.mixed_precision


@pytest.fixture(autouse=True)
def _float32_after():
    """The global policy is process-wide: whatever a test does, the next one starts at float32."""
    yield
    mp.set_global_policy("float32")


def _data(n=64):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = (rng.random((n, 8, 8, 1)) * 0.2 + y[:, None, None, None] * 0.3).astype(np.float32)
    return x, y


def _model(**last):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu", name="conv"), layers.Flatten(),
        layers.Dense(3, activation="softmax", name="out", **last),
    ])  # fmt: skip


def _record_dtypes(model):
    """name -> the dtypes each named layer's output had, call by call."""
    seen: dict[str, list[torch.dtype]] = {"conv": []}
    for layer in model.modules():
        if getattr(layer, "name", None) in seen:
            layer.register_forward_hook(lambda mod, args, out: seen[mod.name].append(out.dtype))
    return seen


def test_the_policy_is_keras_and_a_model_takes_the_one_set_when_it_is_made():
    assert mp.global_policy() == mp.Policy("float32") and mp.dtype_policy().name == "float32"
    before = _model()
    mp.set_global_policy("mixed_bfloat16")
    policy = mp.global_policy()
    assert repr(policy) == '<DTypePolicy "mixed_bfloat16">'
    assert (policy.compute_dtype, policy.variable_dtype) == ("bfloat16", "float32")
    after = _model()
    assert after.dtype_policy.name == "mixed_bfloat16" and before.dtype_policy.name == "float32"
    before.dtype_policy = "mixed_float16"  # Keras' setter
    assert before.dtype_policy.compute_dtype == "float16"
    mp.set_dtype_policy(mp.DTypePolicy("float32"))  # Keras 3's alias, with a policy object
    assert mp.global_policy().name == "float32"


def test_fit_under_mixed_bfloat16_computes_in_bfloat16_and_keeps_float32_weights_and_predictions():
    x, y = _data()
    mp.set_global_policy("mixed_bfloat16")
    model = _model(dtype="float32")  # Keras' guide keeps the output layer in float32
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seen = _record_dtypes(model)
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    assert set(seen["conv"]) == {torch.bfloat16}  # the conv ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9
    seen["conv"].clear()
    probs = model.predict(x, verbose=0)
    assert probs.dtype == np.float32 and set(seen["conv"]) == {torch.float32}  # predict stays float32


@pytest.mark.parametrize("functional", [False, True])
def test_a_layer_marked_float32_computes_in_float32_under_autocast_even_as_the_last(functional):
    x = torch.rand(4, 1, 8, 8)
    if functional:
        inputs = keras.Input((8, 8, 1))
        hidden = layers.Dense(5, name="hidden", dtype="float32")(layers.Flatten()(inputs))
        model = keras.Model(inputs, layers.Dense(3, activation="softmax", dtype="float32")(layers.Dense(4)(hidden)))
    else:
        model = keras.Sequential([keras.Input((8, 8, 1)), layers.Flatten(), layers.Dense(5, name="hidden", dtype="float32"),
                                  layers.Dense(4), layers.Dense(3, activation="softmax", dtype="float32")])  # fmt: skip
    seen = []
    next(m for m in model.modules() if getattr(m, "name", None) == "hidden").register_forward_hook(
        lambda mod, args, out: seen.append(out.dtype))  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.float32 and seen == [torch.float32]  # the marked layers, middle and last
    model.layers[-1].float32 = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16  # unmarked, it follows the autocast


def test_mixed_bfloat16_trains_to_nearly_the_float32_weights():
    x, y = _data()
    runs = {}
    for policy in ("float32", "mixed_bfloat16"):
        mp.set_global_policy(policy)
        model = _model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        runs[policy] = model.predict(x, verbose=0)
    difference = np.abs(runs["float32"] - runs["mixed_bfloat16"]).max()
    assert 0 < difference < 0.05  # bfloat16's rounding, not another training


def test_mixed_float16_trains_with_the_engines_loss_scaling():
    x, y = _data(32)
    mp.set_global_policy("mixed_float16")
    model = _model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    seen = _record_dtypes(model)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert set(seen["conv"]) == {torch.float16}
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float64"])
def test_a_policy_with_16_or_64_bit_weights_is_refused_and_says_what_to_use(name):
    with pytest.raises(CnnkitError, match="keeps weights in float32.*mixed_bfloat16"):
        mp.set_global_policy(name)
    assert mp.global_policy().name == "float32"


def test_bad_policies_and_layer_dtypes_say_what_is_wrong():
    with pytest.raises(CnnkitError, match="unknown dtype policy 'mixed'.*mixed_bfloat16"):
        mp.Policy("mixed")
    with pytest.raises(CnnkitError, match="policy name"):
        mp.set_global_policy(None)
    with pytest.raises(CnnkitError, match="set_global_policy"):
        layers.Dense(3, dtype="mixed_bfloat16")
    with pytest.raises(CnnkitError, match="scales the loss itself"):
        mp.LossScaleOptimizer  # noqa: B018


def test_a_float32_layer_keeps_its_dtype_through_the_model_file(tmp_path):
    model = _model(dtype="float32")
    assert model.layers[-1].get_config()["dtype"] == "float32"
    assert "dtype" not in model.layers[0].get_config()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.layers[-1].float32 and not loaded.layers[0].float32
