"""Checkpoint files: the training state (for resuming) and the trained-model file (for evaluation and serving).

Two kinds of file, both written atomically (`sanet.infra.atomic.atomic_write`: a preempted pod never leaves half a file)
and both read with `torch.load(..., weights_only=True)`, so that opening a checkpoint can never run arbitrary code:
everything in them is tensors, numbers, strings, lists, tuples and dicts.

- Training state, `<train.out_dir>/checkpoints/last.pt`: model, optimiser, scheduler, AMP scaler and sampler states,
  the random-number generators (torch, CUDA, numpy, Python), the epoch and step reached, and a fingerprint of the
  parameters that shape training. `sanet train` resumes from it automatically; a file whose fingerprint differs (the
  parameters changed) is refused with a message instead of silently mixing two experiments.
- Trained model, `<train.out_dir>/model.pt`: the weights, the resolved parameters (so the architecture can be rebuilt
  without params.yaml) and metadata such as the number of training identities. `sanet evaluate` and the MLflow model
  read it. It is a DVC output (the `train` stage's), so its bytes are a function of what the stage depends on: the
  parameters it stores are the training's (`MODEL_FILE_SECTIONS`, the `params` of the train stage in dvc.yaml),
  every other setting at its default (a tracking URI or a registry tolerance must not change the model file), and
  its metadata says what the weights are, never which run made them (no run id, time or speed: those go to the
  sidecar `provenance.json` beside it, `sanet.infra.provenance`). `torch.save` of the same tensors and the same
  plain data writes the same bytes (the zip records carry no time stamps).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from sanet.engine.errors import CheckpointError
from sanet.infra.atomic import atomic_write

if TYPE_CHECKING:
    from sanet.config import Params
    from sanet.model.sanet import SANet

__all__ = [
    "MODEL_FILE_SECTIONS",
    "MODEL_FORMAT",
    "STATE_FORMAT",
    "CheckpointError",
    "capture_rng",
    "load_checkpoint",
    "load_model_file",
    "restore_rng",
    "save_checkpoint",
    "save_model_file",
    "training_differences",
    "training_fingerprint",
    "training_tree",
    "unwrap",
]

STATE_FORMAT = "sanet-train-state/1"
MODEL_FORMAT = "sanet-model/1"

# Sections whose values change what training computes; evaluation, tracking and output settings do not.
_TRAINING_SECTIONS = ("seed", "data", "input", "model", "loss", "train", "augment", "masks")
_NOT_TRAINING = {("train", "out_dir"), ("train", "log_every"), ("train", "eval_every"), ("train", "eval_untrained")}
_NOT_TRAINING |= {("data", "workers"), ("data", "evaluate"), ("train", "compile")}

MODEL_FILE_SECTIONS: dict[str, tuple[str, ...] | None] = {
    "profile": None,
    "seed": None,
    "data": ("root", "train"),
    "input": None,
    "model": None,
    "loss": None,
    "train": None,
    "augment": None,
    "evaluation": ("distance", "rerank"),
}
"""The parameters a model file stores as trained (None: the whole section), as dvc.yaml's train stage lists them."""


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write a checkpoint dictionary atomically (temporary file, then rename)."""
    return atomic_write(path, lambda handle: torch.save(dict(state), handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", expect: str | None = None) -> dict:
    """Read a checkpoint safely (`weights_only=True`); `expect` checks its `format` entry.

    Raises:
        CheckpointError: missing or unreadable file, content that is not plain data, or the wrong kind of file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read the checkpoint {path}: {reason}") from exc
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a sanet checkpoint (no 'format' entry)")
    if expect is not None and state["format"] != expect:
        raise CheckpointError(f"{path} holds {state['format']!r}, expected {expect!r}")
    return state


def training_tree(params: Params) -> dict[str, Any]:
    """The parameters that shape training, as plain data (what a checkpoint stores and its fingerprint hashes)."""
    tree = params.model_dump(mode="json", include=set(_TRAINING_SECTIONS))
    for section, key in _NOT_TRAINING:
        tree.get(section, {}).pop(key, None)
    return tree


def training_fingerprint(params: Params) -> str:
    """A hash of the parameters that shape training: a checkpoint resumes only under the same fingerprint."""
    text = json.dumps(training_tree(params), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_differences(params: Params, saved_tree: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose value differs between `params` and the training parameters stored in a checkpoint."""
    current = training_tree(params)

    def walk(a: Any, b: Any, prefix: str) -> list[str]:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys = sorted(set(a) | set(b))
            return [d for k in keys for d in walk(a.get(k), b.get(k), f"{prefix}{k}.")]
        return [] if a == b else [f"{prefix[:-1]}: {b!r} in the checkpoint, {a!r} now"]

    return walk(current, saved_tree, "")


def capture_rng() -> dict[str, Any]:
    """The state of every random-number generator a training step may draw from."""
    # legacy=True (the default) gives the tuple form: ("MT19937", keys, pos, has_gauss, cached_gaussian)
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put every random-number generator back to a state from `capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):  # DistributedDataParallel
            model = cast(torch.nn.Module, model.module)
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = cast(torch.nn.Module, model._orig_mod)
        else:
            return model


def model_file_params(params: Params) -> dict[str, Any]:
    """The parameters a model file stores: `MODEL_FILE_SECTIONS` as in `params`, every other setting its default."""
    current = params.model_dump(mode="json", exclude={"profiles"})
    tree = type(params)().model_dump(mode="json", exclude={"profiles"})
    for section, keys in MODEL_FILE_SECTIONS.items():
        if keys is None:
            tree[section] = current[section]
        else:
            tree[section] |= {key: current[section][key] for key in keys}
    return tree


def save_model_file(
    path: str | Path,
    model: torch.nn.Module,
    params: Params,
    num_classes: int,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the trained-model file: weights (on the CPU), resolved parameters and metadata."""
    plain = unwrap(model)
    weights = {key: value.detach().cpu() for key, value in plain.state_dict().items()}
    state = {
        "format": MODEL_FORMAT,
        "params": model_file_params(params),
        "num_classes": int(num_classes),
        "state_dict": weights,
        "meta": dict(meta or {}),
    }
    return save_checkpoint(path, state)


def load_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SANet, Params, dict]:
    """Rebuild a trained model in eval mode from its file; returns `(model, params, meta)`.

    The architecture comes from the parameters stored in the file, not from params.yaml, so a model file stays
    usable after params.yaml changes. No pretrained weights are read: the file holds all of them.
    """
    from pydantic import ValidationError

    from sanet.config import Params
    from sanet.model.sanet import build_model

    state = load_checkpoint(path, map_location=map_location, expect=MODEL_FORMAT)
    try:  # already resolved when saved (profile applied): validate as is
        params = Params.model_validate(state["params"])
    except ValidationError as exc:
        raise CheckpointError(f"the parameters stored in {path} are not valid for this version: {exc}") from None
    rebuild = params.model_copy(update={"model": params.model.model_copy(update={"pretrained": "none"})})
    model = build_model(rebuild, num_classes=state["num_classes"])
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {path} do not fit the model its parameters describe: {exc}") from None
    model.to(map_location).eval()
    return model, params, dict(state.get("meta", {}))
