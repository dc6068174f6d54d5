"""Running the pipeline's stages on a cluster: data by URI (`transfer`, `fetch`) and one step per stage (`steps`).

Kubeflow components (`components/`) call `sanet.cluster.steps`; nothing here imports kfp. `sanet kfp` (compile,
submit) lives in `sanet.kubeflow`.
"""
