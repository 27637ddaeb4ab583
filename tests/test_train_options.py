"""The training options are declared once (TrainConfig's fields): the flags, choices and config.json follow."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from cnnkit.cli import build_parser
from cnnkit.cli._options import add_options, flag_of, given_options
from cnnkit.data.augment import AUGMENTATIONS
from cnnkit.errors import ConfigError
from cnnkit.recipe.config import TrainConfig, option_of
from cnnkit.train.optimizers import OPTIMIZERS, SCHEDULES
from cnnkit.train.settings import PRECISIONS
from conftest import SRC, run_main


def _actions(command: str) -> dict[str, argparse.Action]:
    """The flags of ``cnnkit COMMAND`` by long form."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {action.option_strings[-1]: action for action in sub.choices[command]._actions if action.option_strings}


def test_every_training_option_is_a_train_flag_and_nothing_else_is():
    flags = _actions("train")
    options = {flag_of(TrainConfig, f.name) for f in dataclasses.fields(TrainConfig)}
    assert set(flags) - options == {"--help", "--config", "--resume"}
    assert options <= set(flags)
    assert flags["--no-report"].dest == "report" and flags["--quiet"].const == 0 and flags["--quiet"].dest == "verbose"
    assert "-q" in flags["--quiet"].option_strings
    for name in ("--tta", "--compile", "--deterministic", "--tensorboard", "--sync-bn"):
        assert isinstance(flags[name], argparse._StoreTrueAction), name
    assert all(action.default is None for name, action in flags.items() if name != "--help")  # "not given"


def test_choices_come_from_the_registries_that_use_them():
    flags = _actions("train")
    assert tuple(flags["--optimizer"].choices) == tuple(OPTIMIZERS)
    assert tuple(flags["--schedule"].choices) == SCHEDULES
    assert tuple(flags["--precision"].choices) == ("auto", *PRECISIONS)
    assert all(op in flags["--augment"].help for op in AUGMENTATIONS)
    # validate() checks the same lists, naming them.
    for name, choices in [("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("precision", PRECISIONS)]:
        with pytest.raises(ConfigError, match=f"{name} must be .*{list(choices)[-1]}"):
            TrainConfig(**{name: "nope"}).validate()
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert tuple(option_of(fields["optimizer"]).choices) == tuple(OPTIMIZERS)


def test_flags_override_the_config_file_and_parse_durations(tmp_path):
    parser = argparse.ArgumentParser()
    add_options(parser, TrainConfig)
    args = parser.parse_args(["--epochs", "3", "--time", "5m", "--dist-timeout", "1h", "--no-report", "-q"])
    given = given_options(args, TrainConfig)
    assert given == {"epochs": 3, "time": 300.0, "report": False, "verbose": 0, "dist_timeout": 3600.0}
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 7, "lr": 0.01}))
    config = TrainConfig.from_file(tmp_path / "c.json").replace(**given)
    assert (config.epochs, config.lr, config.time, config.report, config.verbose) == (3, 0.01, 300.0, False, 0)


def test_config_json_round_trips(tmp_path):
    changed = TrainConfig(model="lenet5", data_dir="/data", workers=2, epochs=3, optimizer="sgd", lr=0.05,
                          clip_norm=1.0, time=90.0, tta=True, report=False, verbose=0, weights="imagenet",
                          freeze_epochs=2, batch_scope="process", dist_timeout=60.0)  # fmt: skip
    for config in (TrainConfig(), changed):
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config.to_dict()))
        assert TrainConfig.from_file(path) == config


def test_resume_refuses_each_given_option_by_its_flag(tmp_path):
    """Every generated flag counts: before, -q was ignored on --resume and --no-report was named --report.

    --epochs is the one option --resume takes (it extends a finished run: tests/faults/test_train_faults.py)."""
    for args, flag in [(["--lr", "0.1"], "--lr"), (["--no-report"], "--no-report"), (["-q"], "--quiet"),
                       (["--dist-timeout", "5m"], "--dist-timeout"), (["--config", "c.json"], "--config")]:  # fmt: skip
        result = run_main("train", "--resume", str(tmp_path), *args)
        assert result.returncode == 1 and f"drop {flag}" in result.stderr, (args, result.stderr)


def test_lr_find_flags_are_training_options():
    from cnnkit.recipe.config import LR_FIND_OPTIONS as OPTIONS

    flags = _actions("lr-find")
    assert set(flags) == {"--help", "--steps", "--out", *(flag_of(TrainConfig, name) for name in OPTIONS)}
    assert tuple(flags["--optimizer"].choices) == tuple(OPTIMIZERS)
    assert run_main("lr-find", "--optimizer", "lion").returncode == 2


def test_a_new_config_field_is_a_working_train_flag(tmp_path):
    """Add a field to a copy of the sources: `cnnkit train` shows it, parses it, and config.json records it."""
    src = tmp_path / "src"
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    config_py = src / "cnnkit" / "recipe" / "config.py"
    text = config_py.read_text()
    anchor = "    @property\n    def head_only_epochs"
    assert text.count(anchor) == 1
    config_py.write_text(text.replace(anchor, '    new_flag: int = option(3, "a flag a test added")\n\n' + anchor))
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "200"}

    def cnnkit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)  # fmt: skip

    help_text = cnnkit("train", "--help")
    assert help_text.returncode == 0, help_text.stderr
    assert "--new-flag NEW_FLAG" in help_text.stdout and "a flag a test added (default: 3)" in help_text.stdout
    out = tmp_path / "run"  # on faces, the smallest built-in data set: one epoch takes seconds
    result = cnnkit(
        "train", "--new-flag", "5", "--data", "faces", "--epochs", "1", "--no-report", "-q", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["new_flag"] == 5


def test_a_plain_field_is_a_flag_of_its_type():
    @dataclasses.dataclass
    class Config:
        plain_number: int = 3
        on_by_default: bool = True
        maybe: float | None = None

    parser = argparse.ArgumentParser()
    add_options(parser, Config)
    args = parser.parse_args(["--plain-number", "5", "--no-on-by-default"])
    assert given_options(args, Config) == {"plain_number": 5, "on_by_default": False}
    assert given_options(parser.parse_args(["--maybe", "0.5"]), Config) == {"maybe": 0.5}
    with pytest.raises(SystemExit):
        parser.parse_args(["--plain-number", "five"])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["models", "--help"], ["train", "--help"],
                                  ["tune", "--help"], ["lr-find", "--help"], ["show-batch", "--help"],
                                  ["train", "--epochs", "x"], ["train", "--optimizer", "adma"]])  # fmt: skip
def test_help_and_flag_mistakes_answer_without_importing_torch(argv):
    """torch's import takes seconds: the help of every command whose flags come from the configs, and a
    mistyped flag, answer without it (the choices they list come from torch-free registries)."""
    code = ("import sys\nfrom cnnkit.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted({'torch', 'optuna', 'matplotlib'} & set(sys.modules)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    if argv[0] == "train" and argv[1] != "--help":
        assert "invalid" in out.stderr  # the mistake was refused, by argparse, before anything ran


def test_a_lazy_parser_has_the_whole_train_command_once_it_is_used(capsys):
    parser = build_parser(lazy=True)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    shown = capsys.readouterr().out
    assert "--label-smoothing" in shown and "under torchrun" in shown and "--sync-bn" in shown
    args = build_parser(lazy=True).parse_args(["train", "--epochs", "3", "--no-report"])
    assert given_options(args, TrainConfig) == {"epochs": 3, "report": False}
