"""Running the pipeline's stages on a cluster, one step per stage, data by URI.

- `transfer`: folders to and from `s3://` or local URIs; `fetch`: the benchmarks from a DVC remote or a prefix.
- `workspace`: what every step shares (scratch folder, parameters, weights, the pipeline-run tag).
- `steps` (fetch, masks, train, evaluate, report, gate, register) and `study_steps` (Optuna).

Kubeflow components (`components/`) call the steps; nothing here imports kfp. `sanet kfp` (compile, submit) lives
in `sanet.cluster.kubeflow`.
"""
