"""The MLflow model registry with a gated promotion: `sanet register`, `sanet promote`, `sanet registry show`.

- `register(params, model_file, eval_dir, out)`: the evaluated model becomes a new version (alias `candidate`);
  alias `champion` moves to it only when the gate passes (`sanet.registry.gate`); `out` is reports/registry.json.
- `check_gate(params, model_file, eval_dir)`: the gate's decision without registering (a pipeline's branch).
- `promote(params, version, reason)`: the manual override, with a reason on record.
- `registry_table(params)`: every version, its aliases, gate and results, as text.

Serving contract: `mlflow.pyfunc.load_model(f"models:/{model_name}@champion")` turns uint8 (B, H, W, 3) images into
`{"features": (B, 5, D) float32, "visibility": (B, 5) bool}` (`sanet.serving`).

Importing this package is cheap (no torch, no mlflow): the functions and classes load their module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sanet.infra.lazy import lazy_attributes
from sanet.registry.errors import RegistryError

if TYPE_CHECKING:
    from sanet.registry.gate import Comparison, GateDecision, evaluate_gate
    from sanet.registry.promotion import PromoteResult, promote
    from sanet.registry.registration import GateCheck, RegisterResult, check_gate, register
    from sanet.registry.table import registry_table

__all__ = [
    "Comparison",
    "GateCheck",
    "GateDecision",
    "PromoteResult",
    "RegisterResult",
    "RegistryError",
    "check_gate",
    "evaluate_gate",
    "promote",
    "register",
    "registry_table",
]

_LAZY = {
    "Comparison": "sanet.registry.gate",
    "GateDecision": "sanet.registry.gate",
    "evaluate_gate": "sanet.registry.gate",
    "PromoteResult": "sanet.registry.promotion",
    "promote": "sanet.registry.promotion",
    "GateCheck": "sanet.registry.registration",
    "RegisterResult": "sanet.registry.registration",
    "check_gate": "sanet.registry.registration",
    "register": "sanet.registry.registration",
    "registry_table": "sanet.registry.table",
}


__getattr__ = lazy_attributes(__name__, _LAZY)
