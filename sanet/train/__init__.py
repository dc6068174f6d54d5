"""The training engine: distributed set-up, optimisation, checkpoints, the training loop and feature extraction.

`import sanet.train` stays light (no torch); import the modules themselves: `sanet.train.trainer.train`,
`sanet.train.features.evaluate_benchmark`, `sanet.train.checkpoint.load_model_file`.
"""

from sanet.train.errors import CheckpointError, DistributedError, TrainingError

__all__ = ["CheckpointError", "DistributedError", "TrainingError"]
