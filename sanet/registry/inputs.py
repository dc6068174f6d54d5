"""What `sanet register` registers, read and checked: the model file and the evaluations of exactly that file.

The evaluations are read with the shared reader of stage results (`sanet.contracts.results.load_evaluations`), and
every one of them must have measured this model file (run.json `model_md5`): a version must never carry the numbers
of other weights. Everything here happens before anything is logged, so a mistake leaves no half-registered version
behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sanet.infra.errors import ReportError
from sanet.registry.errors import RegistryError

if TYPE_CHECKING:
    from sanet.config import Params
    from sanet.contracts.results import Evaluation

__all__ = ["Candidate", "model_params", "read_candidate"]

_MODEL_SECTIONS = ("profile", "seed", "input", "model", "loss", "train", "augment")


@dataclass(frozen=True)
class Candidate:
    """The model to register: its file and md5, the parameters it was trained with, its metadata, its evaluations."""

    model_file: Path
    model_md5: str
    params: Params
    meta: dict[str, Any]
    evaluations: dict[str, Evaluation]

    def metrics(self) -> dict[str, dict[str, float]]:
        """`{benchmark: {metric: value}}` as in each metrics.json."""
        return {name: dict(evaluation.metrics) for name, evaluation in self.evaluations.items()}

    def test_data(self) -> dict[str, str]:
        """`{benchmark: data_md5}` of each evaluation's query + gallery (run.json), '' where not recorded."""
        return {name: str(evaluation.run.get("data_md5") or "") for name, evaluation in self.evaluations.items()}


def model_params(params: Params, trained: Params) -> Params:
    """The parameters that describe a trained model: its own training settings, the current data and tracking ones.

    The model file decides the architecture and input size it was trained at (as `sanet evaluate` logs them), so a
    version's `params/...` tags are true to its weights even after params.yaml changed.
    """
    return params.model_copy(update={name: getattr(trained, name) for name in _MODEL_SECTIONS})


def _check_md5(evaluations: Mapping[str, Evaluation], md5: str, model_file: Path) -> None:
    for name, evaluation in evaluations.items():
        recorded = evaluation.run.get("model_md5")
        if recorded != md5:
            raise RegistryError(
                f"{evaluation.folder / 'run.json'}: the {name} evaluation measured another model file "
                f"(model_md5 {recorded!r}, but {model_file} has {md5}): rerun the evaluation (`dvc repro`, or "
                f"`sanet evaluate --benchmark {name} --model {model_file}`) before registering"
            )


def read_candidate(params: Params, model_file: str | Path, eval_dir: str | Path) -> Candidate:
    """Read the model file and the evaluations of `params.data.evaluate` under `eval_dir`, and check they agree.

    Raises:
        RegistryError: missing model file or evaluation folder (named, with what produces it), a malformed
            evaluation, an unreadable model file, or an evaluation of another model file (named benchmark).
    """
    from sanet.contracts.results import load_evaluations
    from sanet.engine.checkpoint import load_model_file
    from sanet.engine.errors import CheckpointError
    from sanet.infra.hashing import file_md5

    model_file, eval_dir = Path(model_file), Path(eval_dir)
    if not model_file.is_file():
        raise RegistryError(
            f"no model file at {model_file}: train one with `sanet train` (or `dvc repro`), which writes it"
        )
    if not eval_dir.is_dir():
        raise RegistryError(
            f"no evaluation results at {eval_dir}: evaluate the model first with `dvc repro` (stage evaluate) or "
            f"`sanet evaluate --benchmark NAME --model {model_file}`"
        )
    try:
        evaluations = load_evaluations(eval_dir, params.data.evaluate, str(model_file))
    except ReportError as exc:
        raise RegistryError(str(exc)) from None
    md5 = file_md5(model_file)
    _check_md5(evaluations, md5, model_file)
    try:
        _, trained, meta = load_model_file(model_file)
    except CheckpointError as exc:
        raise RegistryError(f"{exc}: retrain with `sanet train` (or `dvc repro`)") from None
    return Candidate(model_file, md5, trained, meta, evaluations)
