"""OpenPifPaf as the mask stage's keypoint source: the matplotlib shim, safe checkpoint loading, and the real predictor.

The integration test builds a real OpenPifPaf network from scratch (ShuffleNetV2-K16, random weights, nothing
downloaded), saves it as a checkpoint in the format the adapter loads, and runs the stage over synthetic images. A
random network finds nobody: that is the "no person found" path, which must give empty masks and count them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sanet.cli import main
from sanet.config import SynthParams, load_params
from sanet.masks.errors import MasksError, PifPafCheckpointError
from sanet.masks.mask_files import MaskStore
from sanet.masks.pifpaf import CHECKPOINT_RELEASE, DEFAULT_CHECKPOINT, ensure_get_cmap, load_checkpoint, select_device
from sanet.masks.stage import run_masks


def _pifpaf():
    try:
        from sanet.masks.pifpaf import import_openpifpaf

        return import_openpifpaf()
    except MasksError:
        pytest.skip("OpenPifPaf is not installed (`make pifpaf`; test_environment checks that it is)")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO-17 OpenPifPaf network with random weights, saved as OpenPifPaf saves its checkpoints."""
    openpifpaf = _pifpaf()
    import torch
    from openpifpaf.plugins.coco import CocoKp

    torch.manual_seed(0)
    # ShuffleNetV2-K is OpenPifPaf's own backbone: built from scratch, it has no pretrained weights to download.
    net, _ = openpifpaf.network.Factory(base_name="shufflenetv2k16").factory(head_metas=CocoKp().head_metas)
    path = tmp_path_factory.mktemp("checkpoint") / "random-shufflenetv2k16-cocokp.pkl"
    torch.save({"model": net, "epoch": 0, "meta": {}}, path)
    return path


def test_get_cmap_shim_is_added_only_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib
    import matplotlib.cm

    monkeypatch.delattr(matplotlib.cm, "get_cmap", raising=False)
    assert ensure_get_cmap() is True
    blues = matplotlib.cm.get_cmap("Blues")
    assert blues.name == "Blues" and blues(0.5) == matplotlib.colormaps["Blues"](0.5)
    assert matplotlib.cm.get_cmap("tab20", 5).N == 5
    assert ensure_get_cmap() is False  # present now: left alone


def test_missing_checkpoint_names_the_file_and_its_release(tmp_path: Path) -> None:
    with pytest.raises(PifPafCheckpointError) as exc:
        load_checkpoint(tmp_path / "weights" / DEFAULT_CHECKPOINT)
    message = str(exc.value)
    assert str(tmp_path / "weights" / DEFAULT_CHECKPOINT) in message
    assert CHECKPOINT_RELEASE in message and "0.13" in message and "nothing is downloaded" in message


def test_cli_missing_checkpoint_is_one_message(
    repo_root: Path,
    tiny_synth_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(repo_root)
    argv = ["masks", "--benchmark", "partial_ilids_p", "--root", str(tiny_synth_root), "--out", str(tmp_path / "m")]
    ckpt = tmp_path / "absent.pkl"
    assert main([*argv, "--set", "masks.source=openpifpaf", "--set", f"masks.openpifpaf.checkpoint={ckpt}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sanet masks: error: the OpenPifPaf checkpoint does not exist") and str(ckpt) in err
    assert "Traceback" not in err


def test_checkpoints_with_foreign_classes_are_refused(tmp_path: Path) -> None:
    _pifpaf()
    import torch

    path = tmp_path / "evil.pkl"
    torch.save({"model": torch.nn.Linear(2, 2), "epoch": 0, "hook": os.system}, path)
    with pytest.raises(PifPafCheckpointError, match=r"refusing[\s\S]*system"):
        load_checkpoint(path)
    torch.save({"model": torch.nn.Linear(2, 2), "epoch": 0}, path)  # only torch layers, but no keypoint model
    with pytest.raises(PifPafCheckpointError, match="not an OpenPifPaf COCO-17"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(PifPafCheckpointError, match="cannot read"):
        load_checkpoint(path)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    assert select_device("auto").type == "cpu"
    with pytest.raises(MasksError, match="no CUDA device"):
        select_device("cuda")


def test_real_openpifpaf_through_the_stage_finds_nobody_and_writes_empty_masks(
    tiny_synth: SynthParams, tiny_synth_root: Path, random_checkpoint: Path, params_file: Path, tmp_path: Path
) -> None:
    net = load_checkpoint(random_checkpoint)  # weights_only, OpenPifPaf's classes allowed
    assert type(net).__module__ == "openpifpaf.network.nets" and not net.training
    params = load_params(
        params_file,
        [
            "masks.source=openpifpaf",
            f"masks.openpifpaf.checkpoint={random_checkpoint}",
            "masks.openpifpaf.device=cpu",
            "masks.openpifpaf.batch_size=2",
            "masks.openpifpaf.long_edge=129",
        ],
    )
    out = tmp_path / "masks"
    report = run_masks(
        params,
        "partial_ilids_p",
        root=tiny_synth_root,
        out_dir=out,
        coverage_file=tmp_path / "c.json",
        metrics_file=tmp_path / "s.json",
        track=False,
    )
    assert report.source == "openpifpaf" and report.device == "cpu"
    assert report.images == 2 * tiny_synth.partial.partial_ilids_ids
    assert report.no_person == report.images  # random weights: nobody found, counted, and the stage went on
    store = MaskStore(out)
    for folder in store.folders():
        stored = store.folder(folder)
        assert stored.no_person_rows == set(range(len(stored)))
        assert not any(stored.masks(row).any() for row in range(len(stored)))
        assert np.all(np.asarray(stored.keypoints) == 0)
    coverage = report.coverage["partial_ilids_p"]
    assert coverage["query"]["no_person"] == tiny_synth.partial.partial_ilids_ids and coverage["query"]["global"] == 0.0
    assert store.folder("Partial_iLIDS/Probe").index["checkpoint"] == random_checkpoint.name
