"""Predicted part visibility (paper Eq. 5, v = any(m > 0.5) on the predicted mask) against the label visibility.

The part-aware distance (Eq. 7) compares only the parts visible in both images, so it is only as good as the
visibility it is given. The label of an image is what the mask stage stored for it (`sanet.masks.mask_files`): a
part is present when any pixel of its label mask is above 0.5, the rule training uses
(`sanet.train.losses.part_presence`). A model whose predicted visibility disagrees with the labels (say, every part
always visible) ranks with a distance other than the one the paper describes, whatever its Rank-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sanet.contracts.parts import NUM_PARTS, PARTS, PRESENCE_THRESHOLD
from sanet.masks.mask_files import MaskStore

__all__ = ["label_visibility", "visibility_accuracy"]


def label_visibility(store: MaskStore, paths: Sequence[str]) -> np.ndarray:
    """(N, 5) bool: which parts the stored label masks of `paths` show (any pixel > 0.5), in `PARTS` order.

    Raises:
        MasksError: the store has no masks for one of the images (the message names it).
    """
    rows = [store.masks(path).reshape(NUM_PARTS, -1).max(axis=1) > PRESENCE_THRESHOLD for path in paths]
    return np.stack(rows) if rows else np.zeros((0, NUM_PARTS), dtype=bool)


def visibility_accuracy(
    predicted: np.ndarray, label: np.ndarray, parts: Sequence[int] = tuple(range(NUM_PARTS))
) -> dict[str, dict[str, Any]]:
    """Per part (name -> entry) of `parts`: accuracy and the 2x2 confusion of predicted against label visibility.

    `predicted` and `label` are (N, 5) booleans. An entry has `accuracy` ((TP + TN) / N), `tp` (predicted and
    labelled visible), `fp` (predicted visible, labelled hidden), `fn`, `tn`, and the shares of images predicted
    and labelled visible. With no image, the accuracy and shares are None.
    """
    predicted = np.asarray(predicted, dtype=bool)
    label = np.asarray(label, dtype=bool)
    if predicted.shape != label.shape or predicted.ndim != 2 or predicted.shape[1] != NUM_PARTS:
        raise ValueError(f"predicted {predicted.shape} and label {label.shape} must both be (N, {NUM_PARTS})")
    count = len(predicted)
    out: dict[str, dict[str, Any]] = {}
    for part in parts:
        p, t = predicted[:, part], label[:, part]
        tp, fp = int((p & t).sum()), int((p & ~t).sum())
        fn, tn = int((~p & t).sum()), int((~p & ~t).sum())
        out[PARTS[part]] = {
            "accuracy": round((tp + tn) / count, 6) if count else None,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "predicted_visible": round((tp + fp) / count, 6) if count else None,
            "label_visible": round((tp + fn) / count, 6) if count else None,
        }
    return out
