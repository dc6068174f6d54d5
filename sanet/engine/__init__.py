"""The training engine: distributed set-up, optimisation, checkpoints, the training loop and feature extraction.

`import sanet.engine` stays light (no torch); import the modules themselves: `sanet.engine.trainer.train`,
`sanet.engine.features.evaluate_benchmark`, `sanet.engine.checkpoint.load_model_file`.
"""

from sanet.engine.errors import CheckpointError, DistributedError, TrainingError

__all__ = ["CheckpointError", "DistributedError", "TrainingError"]
