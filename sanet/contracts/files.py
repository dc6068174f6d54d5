"""What each stage writes and the next one reads, by name: the one place the pipeline's file layout is declared.

The CLI's defaults, the stages, `dvc.yaml` (by the same literals, checked by tests/test_layout.py) and the Kubeflow
steps (`sanet.cluster`) all take their file names from here::

    outputs/train/                      TRAIN_DIR (train.out_dir): the training stage
        model.pt                        MODEL_FILE: the trained model (evaluation, registry, serving read it)
        metrics.json  history.csv       TRAIN_METRICS_FILE, HISTORY_FILE: the report reads them
        checkpoints/last.pt             CHECKPOINT_FILE: the resumable state (not a DVC output)
        provenance.json                 TRAIN_PROVENANCE_FILE (sanet.infra.provenance)
    reports/eval/<benchmark>/           EVAL_DIR / <benchmark>: the evaluation stage, one folder per benchmark
        metrics.json  run.json  cmc.csv  diagnostics.json  routing.json   (EvalFiles)
        ranked_list.png  routing.png  diagnostics.png
    reports/benchmark.md  reports/benchmark.txt  reports/figures/    the report stage
    reports/registry.json                                            the register stage
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRAIN_DIR = Path("outputs/train")
MODEL_FILE = "model.pt"
TRAIN_METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = Path("checkpoints") / "last.pt"
TRAIN_PROVENANCE_FILE = "provenance.json"

EVAL_DIR = Path("reports/eval")
REPORT_FILE = Path("reports/benchmark.md")
FIGURES_DIR = Path("reports/figures")
PLOTS_PAGE_DIR = Path("reports/plots")
REGISTRY_RECORD = Path("reports/registry.json")


@dataclass(frozen=True)
class EvalFiles:
    """The files of one benchmark's evaluation folder (`reports/eval/<benchmark>`)."""

    folder: Path

    @property
    def metrics(self) -> Path:
        """Rank-k, mAP and mINP, as fractions."""
        return self.folder / "metrics.json"

    @property
    def run(self) -> Path:
        """What was evaluated: model md5, data md5, settings, MLflow run."""
        return self.folder / "run.json"

    @property
    def cmc(self) -> Path:
        return self.folder / "cmc.csv"

    @property
    def diagnostics(self) -> Path:
        return self.folder / "diagnostics.json"

    @property
    def diagnostics_figure(self) -> Path:
        return self.folder / "diagnostics.png"

    @property
    def ranked_list(self) -> Path:
        return self.folder / "ranked_list.png"

    @property
    def routing(self) -> Path:
        return self.folder / "routing.json"

    @property
    def routing_figure(self) -> Path:
        return self.folder / "routing.png"


def eval_files(benchmark: str, eval_dir: str | Path = EVAL_DIR) -> EvalFiles:
    """The evaluation folder of `benchmark` under `eval_dir`."""
    return EvalFiles(Path(eval_dir) / benchmark)
