"""The five body parts SANet describes, in the one order every stage uses.

Masks (`sanet masks`), the model's branches, the features and visibility it returns at eval time, and the
part-aware distance (paper Eq. 7) all index parts by this order, so it is defined once here.
"""

from __future__ import annotations

PARTS: tuple[str, ...] = ("head", "upper_body", "lower_body", "feet", "global")
"""Head, upper body, lower body, feet, and the whole body (the global branch), as in DESIGN section 4."""

NUM_PARTS: int = len(PARTS)
LOCAL_PARTS: tuple[str, ...] = PARTS[:4]
GLOBAL_INDEX: int = PARTS.index("global")

PRESENCE_THRESHOLD: float = 0.5
"""A part is present in an image when any pixel of its label mask is above this: the rule training's mask targets
and the evaluation's visibility diagnostic share."""
