"""Do the heat maps mean anything? Every method at every layer against three trivial orders.

    python benchmarks/explain_quality.py [--data digits faces] [--images 30] [--run RUN_DIR ...]

For each data set a default-recipe model is trained (`cnnkit train --data NAME`, as shipped; or
``--run`` takes finished runs instead), then every registered heat-map method (the CAM family at
every convolution) and the baselines (random order, centre-out, brightest-pixels-first) are scored
on the first ``--images`` test images, for the predicted class, by deletion (pixels to 0, most
relevant first, 20 steps; area under the class's probability; lower is better) and insertion
(pixels back into a blurred image; higher is better), Petsiuk et al. (RISE, 2018).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import SRC, machine

sys.path.insert(0, str(SRC))


def _test_images(run_dir: Path, count: int):  # noqa: ANN202
    """The run's model and its first ``count`` test images at the model's input shape."""
    from cnnkit.data.prepare import reopen_data
    from cnnkit.data.transforms import conform, images_to_tensor
    from cnnkit.models import load_model

    model = load_model(run_dir / "model.safetensors")
    test = reopen_data(run_dir).dataset.test
    return model, conform(images_to_tensor(test.images[:count]), model.image_shape)


def measure(run_dir: Path, count: int, steps: int) -> None:
    from cnnkit.explain import feature_maps, resolve_layer
    from cnnkit.explain.quality import measure_heatmaps

    model, images = _test_images(run_dir, count)
    started = time.perf_counter()
    quality = measure_heatmaps(model, images, layers="all", steps=steps)
    shapes = ", ".join(f"{name} {m.shape[1]}x{m.shape[2]}" for name, m in feature_maps(model, images[0]).items())
    seconds = time.perf_counter() - started
    print(f"\n{run_dir.name}: {len(images)} test images, {steps} steps; convolutions (h x w): {shapes}; "
          f"default layer {resolve_layer(model, None)[0]}; measured in {seconds:.1f} s")  # fmt: skip
    print(quality.table())
    print(quality.verdict())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["digits", "faces"])
    parser.add_argument("--run", nargs="+", type=Path, help="finished runs to measure instead of training")
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine())
    if args.run:
        for run_dir in args.run:
            measure(run_dir, args.images, args.steps)
        return
    from cnnkit.recipe import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.data:
            result = train(TrainConfig(data=name, seed=args.seed, verbose=0, report=False, out=f"{tmp}/{name}"))
            print(f"\ntrained the default recipe on {name}: test accuracy {result.test.accuracy:.2%}")
            measure(result.run_dir, args.images, args.steps)


if __name__ == "__main__":
    main()
