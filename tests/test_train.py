"""`sanet train` on a tiny synthetic benchmark: outputs and MLflow record, resume, SIGTERM, DDP, fail-fast tracking."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from paths import PARAMS_FILE

from sanet.config import Params, load_params
from sanet.contracts.files import CHECKPOINT_FILE, MODEL_FILE
from sanet.engine.checkpoint import STATE_FORMAT, load_checkpoint, load_model_file
from sanet.engine.errors import CheckpointError
from sanet.train.errors import TrainingError
from sanet.train.stage import EXIT_PREEMPTED, TrainHooks, run_train

SANET = str(Path(sys.executable).with_name("sanet"))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ambient tracking store; MLflow's artifacts (./mlruns beside a sqlite store) land in tmp_path."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)


def tiny_params(tiny_overrides: Callable[..., list[str]], store: Path, *extra: str) -> Params:
    """The tiny training of tests/conftest.py, tracked in `store`, logging no model."""
    return load_params(PARAMS_FILE, tiny_overrides(store, "tracking.log_model=false", *extra))


def test_training_writes_its_outputs_and_one_complete_mlflow_run(
    tiny_overrides, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = ["train.temperature.schedule=exponential", "train.temperature.final=0.5", "tracking.log_model=true"]
    params = load_params(PARAMS_FILE, tiny_overrides(tmp_path, *overrides))
    result = run_train(params, out_dir=tmp_path / "out", device="cpu", progress=False)

    # without progress bars (`--quiet`, a `dvc repro` log): one line per epoch, and no MLflow pickling warning
    printed = capsys.readouterr()
    lines = [line for line in printed.out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all(" loss " in line and " lr " in line and "img/s" in line and "ETA" in line for line in lines)
    assert "CloudPickle" not in printed.out + printed.err

    assert not result.interrupted and result.epoch == 2 and result.global_step > 2
    out = tmp_path / "out"
    assert result.model_file == out / MODEL_FILE and (out / MODEL_FILE).is_file()
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,step,lr,loss,id,triplet,focal,temperature")  # no speed: a DVC output
    assert len(history) == 3  # header + one row per epoch
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["final"]) == {"rank1", "rank3", "rank5", "rank10", "mAP", "mINP"}
    assert summary["untrained"] is not None and summary["steps"] == result.global_step
    provenance = json.loads((out / "provenance.json").read_text())  # the run-dependent facts, beside the outputs
    assert provenance["train_run_id"] == result.run_id and provenance["images_per_second"] > 0
    state = load_checkpoint(out / CHECKPOINT_FILE, expect=STATE_FORMAT)
    assert state["epoch"] == 2 and state["step"] == 0 and state["global_step"] == result.global_step

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sanet").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_id == result.run_id
    assert run.data.params["model.afe.layers"] == "2" and run.data.params["loss.triplet_weight"] == "0.1"
    assert run.data.params["train.lr"] == str(params.train.lr) and run.data.params["model.variant"] == "sanet"
    assert {"git_sha", "data_md5", "variant"} <= set(run.data.tags) and run.data.tags["variant"] == "sanet"
    assert len(run.data.tags["data_md5"]) == 32
    assert run.data.tags["model_md5"] == provenance["model_md5"]  # how `sanet register` finds this run
    losses = client.get_metric_history(run.info.run_id, "train/total")
    assert [m.step for m in losses] == list(range(2, result.global_step + 1, 2))
    temperatures = [m.value for m in client.get_metric_history(run.info.run_id, "train/temperature")]
    assert temperatures[0] > temperatures[-1] > 0.5
    for key in ("train/lr", "train/images_per_second", "untrained/mAP", "final/mAP", "final/rank1"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "train"} <= artifacts
    assert "checkpoints/last.pt" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    batch = torch.zeros(2, 64, 32, 3, dtype=torch.uint8).numpy()
    predicted = model.predict(batch)
    assert predicted["features"].shape[:2] == (2, 5) and predicted["visibility"].shape == (2, 5)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_interrupted_and_resumed_training_ends_with_identical_weights(tiny_overrides, tmp_path: Path) -> None:
    params = tiny_params(tiny_overrides, tmp_path, "train.deterministic=true", "train.eval_untrained=false")
    whole = run_train(params, out_dir=tmp_path / "whole", device="cpu", progress=False)

    first = run_train(params, out_dir=tmp_path / "parts", device="cpu", progress=False, stop_after_steps=3)
    assert first.interrupted and first.global_step == 3 and first.model_file is None
    state = load_checkpoint(tmp_path / "parts" / CHECKPOINT_FILE)
    assert (state["epoch"], state["step"]) == (0, 3)  # mid-epoch
    first_epoch = int(whole.history[0]["step"])  # steps of epoch 1 (the plan's length varies by epoch)
    # stop on the very last step of epoch 1: the checkpoint is (epoch 0, step first_epoch), not yet epoch 1
    second = run_train(
        params, out_dir=tmp_path / "parts", device="cpu", progress=False, stop_after_steps=first_epoch - 3
    )
    assert second.interrupted and second.resumed_from is not None and second.global_step == first_epoch
    assert (load_checkpoint(tmp_path / "parts" / CHECKPOINT_FILE)["step"]) == first_epoch
    third = run_train(params, out_dir=tmp_path / "parts", device="cpu", progress=False)
    assert not third.interrupted and third.global_step == whole.global_step

    expected, got = _weights(tmp_path / "whole" / MODEL_FILE), _weights(tmp_path / "parts" / MODEL_FILE)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"weights differ after resuming: {different[:5]}"
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in third.history]
    assert third.final == whole.final
    # the resumed calls continue the MLflow run of the first one
    assert first.run_id == second.run_id == third.run_id


def test_resuming_under_other_training_parameters_is_refused(tiny_overrides, tmp_path: Path) -> None:
    params = tiny_params(tiny_overrides, tmp_path, "train.eval_untrained=false", "train.lr=0.02")
    run_train(params, out_dir=tmp_path / "out", device="cpu", progress=False, stop_after_steps=1)
    changed = tiny_params(tiny_overrides, tmp_path, "train.eval_untrained=false", "train.lr=0.05")
    with pytest.raises(CheckpointError, match=r"train\.lr: 0\.02 in the checkpoint, 0\.05 now[\s\S]*--fresh"):
        run_train(changed, out_dir=tmp_path / "out", device="cpu", progress=False)
    fresh = run_train(changed, out_dir=tmp_path / "out", device="cpu", progress=False, resume=False, stop_after_steps=1)
    assert fresh.resumed_from is None and fresh.global_step == 1


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_overrides, tmp_path: Path) -> None:
    overrides = tiny_overrides(tmp_path, "train.epochs=200", "train.eval_untrained=false")
    overrides.append("tracking.log_model=false")
    args = [SANET, "train", "--params", str(PARAMS_FILE), "--quiet", "--device", "cpu"]
    args += ["--out", str(tmp_path / "out")]
    args += [f"--set={o}" for o in overrides]
    checkpoint = tmp_path / "out" / CHECKPOINT_FILE
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = subprocess.Popen(args, cwd=tmp_path, env=_cli_env(tmp_path), **pipes)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.is_file():  # the end of the first epoch
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.1)
        seen = load_checkpoint(checkpoint)["global_step"]
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_PREEMPTED, stderr.decode()
    assert b"Traceback" not in stderr
    assert b"stopped at epoch" in stdout and b"to resume" in stdout
    state = load_checkpoint(checkpoint)
    assert state["global_step"] > seen  # written on SIGTERM, after the epoch checkpoint
    assert state["epoch"] < 200
    assert not list(checkpoint.parent.glob("*.tmp"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_stops_the_run_before_training(tiny_overrides, tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    overrides = tiny_overrides(tmp_path)
    args = [SANET, "train", "--params", str(PARAMS_FILE), "--quiet", "--device", "cpu"]
    args += ["--out", str(tmp_path / "out")]
    args += [f"--set={o}" for o in overrides]
    env = _cli_env(tmp_path) | {"MLFLOW_TRACKING_URI": uri}  # the environment overrides tracking.uri
    start = time.monotonic()
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - start
    assert done.returncode == 2
    assert uri in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing was trained or written
    assert seconds < 30


DDP_SCRIPT = r"""
import json, os, sys

watched = sys.argv[1]
events = []

def audit(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = str(args[0]), args[1], args[2]
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing and path.startswith(watched):
            events.append(("open", path))
    elif event in ("os.rename", "os.replace") and str(args[1]).startswith(watched):
        events.append((event, str(args[1])))
    elif event == "sqlite3.connect" and str(args[0]).startswith(watched):
        events.append((event, str(args[0])))

sys.addaudithook(audit)
from sanet.cli import main

code = main(sys.argv[3:])
with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.json"), "w") as handle:
    json.dump({"code": code, "events": events}, handle)
sys.exit(code)
"""


def test_two_process_ddp_on_cpu_trains_and_only_rank_0_writes(tiny_overrides, tmp_path: Path) -> None:
    watched, reports = tmp_path / "watched", tmp_path / "reports"
    watched.mkdir()
    reports.mkdir()
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    overrides = tiny_overrides(watched, "train.eval_untrained=false", "tracking.log_model=false")
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    args += [str(watched), str(reports), "train", "--params", str(PARAMS_FILE), "--quiet"]
    args += ["--device", "cpu", "--out", str(watched / "out")]
    args += [f"--set={o}" for o in overrides]
    env = _cli_env(tmp_path) | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0 = json.loads((reports / "rank0.json").read_text())
    rank1 = json.loads((reports / "rank1.json").read_text())
    assert rank0["code"] == rank1["code"] == 0
    assert rank1["events"] == [], f"rank 1 wrote: {rank1['events'][:5]}"
    written = {Path(path).name for _, path in rank0["events"]}
    assert {"last.pt", "model.pt", "history.csv", "metrics.json"} <= written
    assert any(event == "sqlite3.connect" for event, _ in rank0["events"])

    state = load_checkpoint(watched / "out" / CHECKPOINT_FILE)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["epoch"] == 2
    client = MlflowClient(f"sqlite:///{watched / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sanet").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["world_size"] == "2"


def test_validation_on_held_out_identities_reports_every_epoch_to_the_hooks(tiny_overrides, tmp_path: Path) -> None:
    params = tiny_params(
        tiny_overrides, tmp_path, "train.val_ids=2", "train.eval_every=1", "train.eval_untrained=false"
    )
    seen: list[tuple[int, float]] = []
    hooks = TrainHooks(
        run_name="trial 0",
        tags={"optuna_trial": "0", "stage": "hpo_trial"},
        on_validation=lambda epoch, metrics: seen.append((epoch, metrics["mAP"])),
        log_checkpoint=False,
    )
    result = run_train(params, out_dir=tmp_path / "out", device="cpu", progress=False, hooks=hooks)

    assert [epoch for epoch, _ in seen] == [1, 2]  # after epoch 1, then the final validation after epoch 2
    assert seen[-1][1] == result.final["mAP"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    assert run.info.run_name == "trial 0" and run.data.tags["optuna_trial"] == "0"
    assert run.data.tags["stage"] == "hpo_trial"  # the hooks' tags win over the trainer's defaults
    assert "val/mAP" in run.data.metrics and "untrained/mAP" not in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert "checkpoints" not in artifacts
    # 6 training identities, 2 held out: the classifier has 4 outputs and validation never saw the test split
    _, _, meta = load_model_file(tmp_path / "out" / MODEL_FILE)
    assert load_checkpoint(tmp_path / "out" / MODEL_FILE)["num_classes"] == 4
    assert meta["final"] == result.final


def test_a_hook_that_raises_stops_the_training_and_fails_its_run(tiny_overrides, tmp_path: Path) -> None:
    params = tiny_params(
        tiny_overrides, tmp_path, "train.val_ids=2", "train.eval_every=1", "train.eval_untrained=false"
    )

    class Stop(Exception):
        pass

    def stop(epoch: int, metrics: object) -> None:
        raise Stop(f"epoch {epoch}")

    with pytest.raises(Stop, match="epoch 1"):
        run_train(params, out_dir=tmp_path / "out", device="cpu", progress=False, hooks=TrainHooks(on_validation=stop))
    assert not (tmp_path / "out" / MODEL_FILE).exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("sanet").experiment_id])
    assert run.info.status == "FAILED"


def test_holding_out_more_identities_than_the_split_has_stops_before_training(tiny_overrides, tmp_path: Path) -> None:
    params = tiny_params(tiny_overrides, tmp_path, "train.val_ids=5")
    with pytest.raises(TrainingError, match=r"train\.val_ids: .*leaves fewer than 2 to train on"):
        run_train(params, out_dir=tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()
