"""Kubeflow components: one lightweight component per pipeline stage, each a thin wrapper of `sanet.cluster.steps`.

They run in the project image (`components.image`), which holds `sanet` and kfp, so `install_kfp_package=False`
and nothing is installed at run time. Large data moves by URI under the run's work prefix; components return URIs,
small values, Kubeflow metrics and Markdown.
"""
