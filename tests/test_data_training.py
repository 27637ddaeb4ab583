"""Training and evaluating on real data through the CLI: folders, CSVs, standard data sets, streaming."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from cnnkit.cli import main
from cnnkit.data.prepare import open_data, reopen_data
from cnnkit.data.saved_split import load_split
from cnnkit.errors import DataError
from official_formats import write_cifar10_binary, write_medmnist, write_mnist
from test_data_folders import write_classes, write_zoo


def _fingerprint(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Two classes of small pictures, plus every odd and broken kind of file in the first class."""
    root = tmp_path_factory.mktemp("photos") / "pets"
    write_classes(root, {"cat": 16, "dog": 16}, size=20)
    problems = write_zoo(root / "cat")
    return root, problems


def test_train_on_a_folder_skips_bad_files_and_writes_the_report(photo_folder, tmp_path, capsys):
    root, problems = photo_folder
    before = _fingerprint(root)
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "train", "--data", str(root), "--epochs", "1", "--image-size", "20",
                          "--max-bad-files", "0.2", "--out", str(run), "-q")  # fmt: skip
    assert code == 0, err
    assert _fingerprint(root) == before  # nothing in the data folder was touched
    bad = [line.split("\t") for line in (run / "bad_files.txt").read_text().splitlines()]
    assert {(p.split("/")[-1], kind) for p, kind, _ in bad} == set(problems.items())
    report = json.loads((run / "data_report.json").read_text())
    assert report["files"] == 32 + 14 and len(report["bad_files"]) == 5
    assert "data:image/png;base64," in (run / "data_report.html").read_text()
    split = json.loads((run / "split.json").read_text())
    assert split["class_names"] == ["cat", "dog"] and split["image_shape"] == [20, 20, 3]
    files = split["train"] + split["val"] + split["test"]
    assert len(files) == 41 and all(len(f["sha256"]) == 64 for f in files)
    assert not {f["path"] for f in files} & {f"cat/{name}" for name in problems}
    summary = json.loads(__import__("safetensors").safe_open(run / "model.safetensors", "pt").metadata()["cnnkit"])
    assert summary["class_names"] == ["cat", "dog"]

    # evaluate: by default the run's own test split, verified against the recorded hashes
    code, out, err = _cli(capsys, "evaluate", str(run), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == len(split["test"]) and "run's test split" in result["data"]
    assert load_split(run).index("test").class_names == ["cat", "dog"]


def test_too_many_bad_files_stop_before_training(photo_folder, tmp_path, capsys):
    root, _ = photo_folder
    code, _, err = _cli(capsys, "train", "--data", str(root), "--out", str(tmp_path / "run"), "-q")
    assert code == 1
    line = err.strip()
    assert "\n" not in line and "5 of 46 files (11%) cannot be used, more than the 10% allowed" in line
    assert "cat/zero.png (empty)" in line and "check-data" in line
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_csv_training_and_evaluating_another_folder(tmp_path, capsys):
    write_classes(tmp_path / "imgs", {"no": 8, "yes": 8}, size=16)
    rows = [f"imgs/{c}/{c}_{i}.png,{c}" for c in ("no", "yes") for i in range(8)]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    code, _, err = _cli(
        capsys, "train", "--data", str(tmp_path / "labels.csv"), "--epochs", "1", "--out", str(run), "-q", "--no-report"
    )
    assert code == 0, err
    split = json.loads((run / "split.json").read_text())
    assert split["train"][0]["path"].startswith("imgs/")
    again = reopen_data(run)  # what resuming uses: the same files in the same splits, checked by hash
    assert len(again.dataset.train) == len(split["train"]) and len(again.dataset.test) == len(split["test"])
    assert [again.dataset.class_names[y] for y in again.dataset.val.labels] == [f["label"] for f in split["val"]]
    # another folder whose classes the model knows (in another order on disk: mapped by name)
    write_classes(tmp_path / "new" / "test", {"yes": 2, "no": 3}, size=40, seed=77)
    write_classes(tmp_path / "new" / "train", {"yes": 1, "no": 1}, size=40, seed=88)
    code, out, err = _cli(capsys, "evaluate", str(run), "--data", str(tmp_path / "new"), "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 5
    # a changed file of the recorded split is reported, not silently used
    first = load_split(run).record["test"][0]["path"]
    (tmp_path / first).write_bytes((tmp_path / "imgs" / "no" / "no_7.png").read_bytes() + b"x")
    with pytest.raises(DataError, match="missing or changed since"):
        load_split(run).index("test")
    write_classes(tmp_path / "other", {"cat": 2, "dog": 2})
    code, _, err = _cli(capsys, "evaluate", str(run), "--data", str(tmp_path / "other"))
    assert code == 1 and "does not know the class(es) cat, dog" in err


def test_streaming_when_the_images_do_not_fit(tmp_path, capsys, monkeypatch):
    write_classes(tmp_path / "data", {"a": 10, "b": 10}, size=24)
    data = open_data(str(tmp_path / "data"), image_size=12, batch_size=4, cache="none", workers=2)
    assert data.stream is not None and data.train_size == len(data.stream.dataset) and len(data.dataset.train) == 0
    batches = list(data.stream)
    assert sum(len(y) for _, y in batches) == data.train_size
    x, y = batches[0]
    assert x.shape == (4, 3, 12, 12) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert data.dataset.test.images.shape[1:] == (12, 12, 3)  # validation and test stay in memory
    monkeypatch.setenv("CNNKIT_MEMORY_MB", "0")  # the whole CLI path, streamed through the engine
    code, _, err = _cli(capsys, "train", "--data", str(tmp_path / "data"), "--epochs", "1", "--workers", "0",
                        "--cache", "none", "--out", str(tmp_path / "run"), "-q", "--no-report")  # fmt: skip
    assert code == 0, err


def test_standard_data_sets_train_and_evaluate_from_the_cache(tmp_path, capsys):
    cache = str(tmp_path / "cache")
    write_mnist(tmp_path / "cache")
    write_cifar10_binary(tmp_path / "cache")
    write_medmnist(tmp_path / "cache", "pneumoniamnist", classes=2)
    for name, n_val in (("mnist", 4), ("cifar10", 2), ("pneumoniamnist", 6)):
        run = tmp_path / name
        code, out, err = _cli(capsys, "train", "--data", name, "--data-dir", cache, "--epochs", "1", "--out", str(run),
                              "-q", "--no-report")  # fmt: skip
        assert code == 0, (name, err)
        split = json.loads((run / "split.json").read_text())
        assert (len(split["val"]) if isinstance(split["val"], list) else 6) == n_val
        assert len(reopen_data(run, data_dir=cache).dataset.val) == n_val
        code, out, err = _cli(capsys, "evaluate", str(run), "--data", name, "--data-dir", cache, "--json")
        assert code == 0, (name, err)
        assert json.loads(out)["n"] == {"mnist": 20, "cifar10": 10, "pneumoniamnist": 6}[name]
    assert json.loads((tmp_path / "pneumoniamnist" / "split.json").read_text())["val"].startswith("the data set's own")
    code, out, _ = _cli(capsys, "datasets", "--data-dir", cache)
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert "yes" in rows["mnist"] and "yes" in rows["cifar10"] and "no" in rows["svhn"] and "built" in rows["digits"]


def test_check_data_command(photo_folder, tmp_path, cli):
    root, problems = photo_folder
    result = cli("check-data", str(root), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "5" in result.stdout and "zero.png" in result.stdout and "imbalance" in result.stdout
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert {b["path"].split("/")[-1] for b in report["bad_files"]} == set(problems)
    assert report["class_counts"]["all"] == {"cat": 25, "dog": 16}
    assert report["imbalance_ratio"] == pytest.approx(25 / 16, abs=1e-3)
    assert (tmp_path / "data_report.html").stat().st_size > 5000
