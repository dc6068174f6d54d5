"""Optuna studies over SANet's hyperparameters: `sanet hpo --space NAME` (DESIGN section 6).

One study per search space (`SPACES`: AFE layers, AFE kernel, triplet weight, and all three jointly), sampled by a
seeded sampler (brute force over a finite space, TPE where a float is searched) that never trains a setting a
complete trial holds (`search`); each trial trains a short schedule, is scored on identities held out of the
training split (never on a test benchmark) and can be stopped early by the median pruner. Every trial is an MLflow
run nested under the study's parent run, which logs the searched space and ends up holding the best parameters and
the study's plots (Optuna's own, `figures`); `<hpo.reports_dir>/<space>.json` holds the best parameters and value.

    from sanet.hpo.stage import run_hpo
    worker, summary = run_hpo(params, "afe_layers")   # = run_worker, then summarise_study

`create_study` (`study`), `run_worker` (`worker`) and `summarise_study` (`summary`) also work alone, in separate
processes on separate machines sharing one storage (`study_storage`; a Kubeflow pipeline's steps). The modules are
cheap to import: torch, optuna and mlflow are imported by the functions that need them.
"""
