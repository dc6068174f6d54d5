"""The train stage and its engine: distributed set-up, optimisation, checkpoints, the loop and feature extraction.

`stage.run_train` is `sanet train`; it builds `trainer.Trainer` with its hooks (`hooks`, `mlflow_hook`) and the
resume state (`resume`). The evaluation and the registry reuse `features.evaluate_benchmark` and
`checkpoint.load_model_file`. Import the modules themselves; the package re-exports nothing.
"""
