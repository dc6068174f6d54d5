"""The MLflow model registry with a gated promotion: `sanet register`, `sanet promote`, `sanet registry show`.

- `stage.run_register(params, model_file, eval_dir, out)`: the evaluated model becomes a new version (alias
  `candidate`); alias `champion` moves to it only when the gate passes (`sanet.registry.gate`); `out` is
  reports/registry.json.
- `stage.check_gate(params, model_file, eval_dir)`: the gate's decision without registering (a pipeline's branch).
- `promotion.promote(params, version, reason)`: the manual override, with a reason on record.
- `table.registry_table(params)`: every version, its aliases, gate and results, as text.

Serving contract: `mlflow.pyfunc.load_model(f"models:/{model_name}@champion")` turns uint8 (B, H, W, 3) images into
`{"features": (B, 5, D) float32, "visibility": (B, 5) bool}` (`sanet.serving`).

`client` holds the MLflow client and the version tags; `inputs` reads what the gate compares. The modules are cheap to
import (no torch, no mlflow until a function runs); the package re-exports nothing.
"""
