"""What the pipelines ask of Kubernetes: secrets as environment variables, GPUs, shared memory, resources.

Secrets (created once per namespace, docs/kubeflow.md); keys are mapped to the variables `sanet` reads:

- `sanet-mlflow`: `tracking-uri` -> MLFLOW_TRACKING_URI (the MLflow server; its artifact store on S3).
- `sanet-s3`: `access-key-id`, `secret-access-key`, `endpoint-url` -> AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
  AWS_ENDPOINT_URL (boto3, DVC and MLflow's artifact client read them).
- `sanet-optuna`: `storage-url` -> SANET_HPO_STORAGE (the Optuna storage the workers share, e.g. PostgreSQL).
"""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask
from kfp.dsl.pipeline_channel import PipelineChannel

MLFLOW_SECRET = "sanet-mlflow"
S3_SECRET = "sanet-s3"
OPTUNA_SECRET = "sanet-optuna"

MLFLOW_ENV = {"tracking-uri": "MLFLOW_TRACKING_URI"}
S3_ENV = {
    "access-key-id": "AWS_ACCESS_KEY_ID",
    "secret-access-key": "AWS_SECRET_ACCESS_KEY",
    "endpoint-url": "AWS_ENDPOINT_URL",
}
OPTUNA_ENV = {"storage-url": "SANET_HPO_STORAGE"}

GPU_RESOURCE = "nvidia.com/gpu"
SHM_SIZE = "16Gi"
"""Memory-backed /dev/shm: DataLoader workers hand batches over through it (a container's default is 64 MiB)."""


def with_secrets(task: PipelineTask, mlflow: bool = True, optuna: bool = False) -> PipelineTask:
    """S3 credentials always; the MLflow server when the step logs; the Optuna storage for study steps."""
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=S3_ENV)
    if mlflow:
        kubernetes.use_secret_as_env(task, secret_name=MLFLOW_SECRET, secret_key_to_env=MLFLOW_ENV)
    if optuna:
        kubernetes.use_secret_as_env(task, secret_name=OPTUNA_SECRET, secret_key_to_env=OPTUNA_ENV)
    return task


def on_gpus(task: PipelineTask, gpus: int | PipelineChannel, cpu: str = "8", memory: str = "32Gi") -> PipelineTask:
    """`gpus` NVIDIA GPUs, CPU and memory requests, and a memory-backed /dev/shm for the DataLoader workers."""
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
    task.set_cpu_request(cpu).set_memory_request(memory)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    return task


def on_cpus(task: PipelineTask, cpu: str = "2", memory: str = "4Gi") -> PipelineTask:
    """CPU and memory requests of a light step (fetch, report, gate, register, study bookkeeping)."""
    return task.set_cpu_request(cpu).set_memory_request(memory)
