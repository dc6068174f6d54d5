"""Optimiser and schedules: parameter groups, warm-up and decay, the Gumbel temperature, checkpoint helpers."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from paths import PARAMS_FILE

from sanet.config import load_params
from sanet.engine.checkpoint import (
    STATE_FORMAT,
    CheckpointError,
    capture_rng,
    load_checkpoint,
    load_model_file,
    restore_rng,
    save_checkpoint,
    save_model_file,
    training_differences,
    training_fingerprint,
    training_tree,
)
from sanet.model.sanet import build_model
from sanet.train.optim import LRSchedule, TemperatureScheduler, build_optimizer, parameter_groups

TINY = [
    "profile=demo",
    "input.height=64",
    "input.width=32",
    "model.afe.width=8",
    "model.afe.layers=2",
    "model.mfe.seg_channels=8",
]


def tiny_params(*overrides: str):
    return load_params(PARAMS_FILE, [*TINY, *overrides])


def test_parameter_groups_split_backbone_from_new_layers() -> None:
    model = build_model(tiny_params(), num_classes=5)
    groups = parameter_groups(model)
    pretrained = {id(p) for p in groups["pretrained"]}
    names = {name for name, p in model.named_parameters() if id(p) in pretrained}
    assert any(n.startswith("trunk.") for n in names)
    assert any(".layer4." in n for n in names)
    assert not any(n.startswith(("afe.",)) or ".classifier." in n or ".seg_head." in n for n in names)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(groups["pretrained"]) + len(groups["new"]) == len(trainable)


def test_optimizer_applies_the_learning_rate_factors() -> None:
    params = tiny_params("train.lr=0.02", "train.lr_factors.pretrained=0.1", "train.lr_factors.new=1.0")
    optimizer = build_optimizer(build_model(params, 5), params.train)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == pytest.approx({"pretrained": 0.002, "new": 0.02})
    schedule = LRSchedule(base_lr=0.02, epochs=10, warmup_epochs=0)
    schedule.apply(optimizer, 1.0)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == pytest.approx(lrs)
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["weight_decay"] == 5e-4


def test_warmup_then_step_decay() -> None:
    schedule = LRSchedule(
        base_lr=0.01, epochs=150, scheduler="step", milestones=(60, 120), warmup_epochs=10, warmup_factor=0.1
    )
    assert schedule.lr(0) == pytest.approx(0.001)
    assert schedule.lr(5) == pytest.approx(0.0055)
    assert schedule.lr(10) == pytest.approx(0.01)
    assert schedule.lr(59.99) == pytest.approx(0.01)
    assert schedule.lr(60) == pytest.approx(0.001)
    assert schedule.lr(149) == pytest.approx(0.0001)


def test_cosine_decay_reaches_the_floor() -> None:
    schedule = LRSchedule(base_lr=0.01, epochs=20, scheduler="cosine", min_lr_factor=0.01, warmup_epochs=2)
    assert schedule.lr(2) == pytest.approx(0.01)
    assert schedule.lr(11) == pytest.approx(0.01 * (0.01 + 0.99 * 0.5))
    assert schedule.lr(20) == pytest.approx(0.0001)
    values = [schedule.lr(e / 4) for e in range(8, 81)]
    assert all(a >= b for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(("schedule", "middle"), [("constant", 1.0), ("linear", 0.55), ("exponential", math.sqrt(0.1))])
def test_temperature_schedules(schedule: str, middle: float) -> None:
    temperature = TemperatureScheduler(start=1.0, final=0.1, epochs=10, schedule=schedule)
    assert temperature(0) == pytest.approx(1.0)
    assert temperature(5) == pytest.approx(middle)
    assert temperature(10) == pytest.approx(1.0 if schedule == "constant" else 0.1)


def test_rng_capture_and_restore_replay_every_generator() -> None:
    state = capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


class Payload:
    """An arbitrary class: unpickling it means importing and running code, which weights_only refuses."""

    def __reduce__(self):  # unpickling would call print: a stand-in for arbitrary code
        return (print, ("code ran while loading a checkpoint",))


def test_checkpoints_load_weights_only(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "c.pt", {"format": STATE_FORMAT, "rng": capture_rng(), "x": torch.ones(2)})
    assert torch.equal(load_checkpoint(good, expect=STATE_FORMAT)["x"], torch.ones(2))
    with pytest.raises(CheckpointError, match="expected 'other'"):
        load_checkpoint(good, expect="other")

    evil = tmp_path / "evil.pt"
    torch.save({"format": STATE_FORMAT, "payload": Payload()}, evil)
    with pytest.raises(CheckpointError, match=r"cannot read the checkpoint .*evil\.pt"):
        load_checkpoint(evil)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"truncated\.pt"):
        load_checkpoint(tmp_path / "truncated.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_fingerprint_ignores_outputs_and_names_what_changed() -> None:
    base = tiny_params()
    assert training_fingerprint(base) == training_fingerprint(tiny_params("train.out_dir=elsewhere", "data.workers=0"))
    changed = tiny_params("train.lr=0.5")
    assert training_fingerprint(changed) != training_fingerprint(base)
    expected = [f"train.lr: {base.train.lr} in the checkpoint, 0.5 now"]  # the profile's lr, then the override
    assert training_differences(changed, training_tree(base)) == expected


def test_model_file_round_trip(tmp_path: Path) -> None:
    params = tiny_params("model.variant=hpnet")
    torch.manual_seed(0)
    model = build_model(params, num_classes=7).eval()
    path = save_model_file(tmp_path / "model.pt", model, params, 7, meta={"epochs": 3})
    loaded, loaded_params, meta = load_model_file(path)
    # the file keeps the training's settings (MODEL_FILE_SECTIONS) and every other setting at its default
    assert loaded_params.model == params.model and loaded_params.train == params.train and meta == {"epochs": 3}
    assert loaded_params.tracking == type(params)().tracking and loaded_params.profiles == {}
    assert not loaded.training
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected, got = model(images), loaded(images)
    assert torch.equal(expected["features"], got["features"])
    assert torch.equal(expected["visibility"], got["visibility"])
