"""A trial's parameters (the base parameters with the sampled values and the short schedule) and the study's name.

A trial trains `hpo.epochs` epochs instead of `train.epochs`: the learning-rate schedule is compressed by the same
factor (milestones and warm-up scaled; the temperature schedule follows `train.epochs` by itself), the network is
validated after every epoch on `hpo.val_ids` identities held out of `data.train`'s training split (never on a test
benchmark; holistic and partial queries, `sanet.train.validation`), and nothing but metrics is logged (no model).

The study name ends with a hash of everything that determines a trial's result, so that workers and reruns with
the same settings share one study, and changed settings start a new one instead of mixing incomparable trials.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from sanet.config import ConfigError, Params, deep_merge
from sanet.hpo.errors import HPOError
from sanet.hpo.spaces import DOTTED, space_params

__all__ = [
    "OBJECTIVE",
    "compress_milestones",
    "objective_text",
    "score_epochs",
    "study_name",
    "trial_params",
    "trial_tree",
]

#: What a trial's value measures (`sanet.hpo.trial`); part of the study name's hash, so that studies scored another way
#: (before: the mAP of one holistic query per held-out identity) are never continued with incomparable values.
#: Change it with the held-out protocol (`sanet.train.validation`, `sanet.data.holdout.PARTIAL_EXTENT`).
OBJECTIVE = "mean of holistic and partial mAP, every held-out image a query"

# Keys of a trial's parameters that do not change its result: paths, runtime and logging settings. Everything else
# of these sections (model, loss, train, augment, input, masks, seed, data.train, evaluation.distance...) does.
_RESULT_SECTIONS = ("seed", "data", "input", "model", "loss", "train", "augment", "masks", "evaluation")
_NOT_RESULT = (
    ("data", "root"),
    ("data", "workers"),
    ("data", "evaluate"),
    ("masks", "out_dir"),
    ("masks", "coverage_file"),
    ("masks", "metrics_file"),
    ("masks", "coco_json"),
    ("masks", "openpifpaf"),
    ("train", "out_dir"),
    ("train", "log_every"),
    ("train", "compile"),
    ("evaluation", "chunk_mib"),
    ("evaluation", "batch_size"),
    ("evaluation", "max_rank"),
)


def score_epochs(params: Params) -> int:
    """How many of a trial's last validations its value averages (`hpo.score_epochs`)."""
    return params.hpo.score_epochs


def objective_text(params: Params) -> str:
    """What a trial's value is, in words (the summary's `metric`): `mean of holistic and partial mAP`..."""
    k = score_epochs(params)
    return "mean of holistic and partial mAP" + (f" over the last {k} epochs" if k > 1 else "")


def compress_milestones(milestones: list[int], factor: float, epochs: int) -> list[int]:
    """Step-decay milestones scaled by `factor`: rounded, at least 1, below `epochs` where possible, increasing."""
    last = max(1, epochs - 1)
    scaled = {min(max(1, math.floor(m * factor + 0.5)), last) for m in milestones}
    return sorted(scaled)


def _validation_message(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"] if p != "function-after") or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif "input" in error and not isinstance(error["input"], dict):
            message += f" (got {error['input']!r})"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def _nested(values: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in values.items():
        node = tree
        parts = str(dotted).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise HPOError(f"trial value {dotted!r}: {part} is set both as a value and as a section")
        node[parts[-1]] = value
    return tree


def trial_params(params: Params, values: Mapping[str, Any]) -> Params:
    """The parameters one trial trains with: `params`, the sampled `values` ({dotted key: value}), a short schedule.

    train.epochs = hpo.epochs with milestones and warm-up compressed by hpo.epochs / train.epochs; a validation
    after every epoch (train.eval_every = 1) on hpo.val_ids held-out identities (train.val_ids), none before
    training; no model logged; runs in the experiment hpo.experiment. Validated like params.yaml.

    Raises:
        ConfigError: a value is invalid (the message names its key).
        HPOError: a dotted key clashes with a section.
    """
    hpo, train = params.hpo, params.train
    factor = hpo.epochs / train.epochs
    schedule = {
        "train": {
            "epochs": hpo.epochs,
            "milestones": compress_milestones(list(train.milestones), factor, hpo.epochs),
            "warmup_epochs": train.warmup_epochs * factor,
            "eval_every": 1,
            "eval_untrained": False,
            "val_ids": hpo.val_ids,
        },
        "tracking": {"log_model": False, "experiment": hpo.experiment},
    }
    tree = deep_merge(deep_merge(params.model_dump(mode="json"), schedule), _nested(values))
    try:
        return Params.model_validate(tree)
    except ValidationError as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "none"
        raise ConfigError(
            f"the trial parameters are invalid (sampled values: {shown}; check hpo.* and hpo.ranges):\n"
            + _validation_message(exc)
        ) from None


def trial_tree(params: Params, space: str) -> dict[str, Any]:
    """What determines the result of a trial of `space`, as plain data (what the study name hashes).

    The base trial parameters without paths and runtime settings and without the searched keys (they vary by
    trial), hpo.epochs, val_ids, seed, pruning and score_epochs, the ranges of the parameters `space` samples, and
    the objective's definition (OBJECTIVE). Not hpo.trials,
    timeout, storage, experiment or the output folders: more trials, or another worker, continue the same study.
    """
    names = space_params(space)
    tree = trial_params(params, {}).model_dump(mode="json", include=set(_RESULT_SECTIONS))
    for section, key in _NOT_RESULT:
        tree.get(section, {}).pop(key, None)
    for name in names:  # the searched values do not identify the study: they vary by trial
        *parents, leaf = DOTTED[name].split(".")
        node = tree
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    hpo = params.hpo.model_dump(mode="json")
    tree["hpo"] = {
        "epochs": hpo["epochs"],
        "val_ids": hpo["val_ids"],
        "seed": hpo["seed"],
        "pruning": hpo["pruning"],
        "ranges": {name: hpo["ranges"][name] for name in names},
        "objective": OBJECTIVE,
        "score_epochs": hpo["score_epochs"],
    }
    return tree


def study_name(params: Params, space: str) -> str:
    """`<hpo.study>-<profile>-<space>-<hash8>`: the same settings give the same study, in any process."""
    text = json.dumps(trial_tree(params, space), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{params.hpo.study}-{params.profile}-{space}-{digest}"
