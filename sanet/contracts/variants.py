"""The model variants of the paper's Table 3 ablation, in one list the schema, the model and the CLI share.

- `hpnet`: head, upper body, lower body and feet branches, no AFE (HPNet, the paper's baseline);
- `global`: the four parts plus the global branch, no AFE;
- `fixed_fe`: the five branches after an AFE whose paths are all on (static);
- `sanet`: the five branches after the adaptive AFE (Gumbel-softmax routing, argmax at eval).

`sanet.model.sanet` builds them.
"""

from __future__ import annotations

from typing import Literal, get_args

Variant = Literal["hpnet", "global", "fixed_fe", "sanet"]
"""The `model.variant` values (the type the parameter schema validates against)."""

VARIANTS: tuple[str, ...] = get_args(Variant)
