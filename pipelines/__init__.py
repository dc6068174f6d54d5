"""Kubeflow pipelines wiring the components: `benchmark` (the DVC pipeline's stages) and `hpo` (Optuna studies).

Each module compiles itself (`python -m pipelines.benchmark`); the compiled YAML beside it is checked in and a
test recompiles and compares. `sanet kfp compile` and `sanet kfp submit` are the commands to use.
"""
