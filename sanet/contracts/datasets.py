"""The folder names of the benchmark releases under the data root, and the synthetic benchmark's marker file.

The dataset classes (`sanet.data.benchmarks`) read these folders and the synthetic generator writes them; the
marker tells synthetic data from real data (the generator never overwrites real data; the evaluation names the
synthetic benchmark in its output).
"""

from __future__ import annotations

MARKER_FILE = "SYNTHETIC.json"
"""At the data root of a synthetic benchmark: generator version, parameters and image counts."""

# Folder names of the real releases (DESIGN section 2).
MARKET_DIR = "Market-1501-v15.09.15"
DUKE_DIR = "DukeMTMC-reID"
PARTIAL_REID_DIR = "Partial-REID_Dataset"
ILIDS_P_DIR = "Partial_iLIDS"
ILIDS_O_DIR = "PartialILIDS"
DATASET_DIRS = (MARKET_DIR, DUKE_DIR, PARTIAL_REID_DIR, ILIDS_P_DIR, ILIDS_O_DIR)

PARTIAL_BENCHMARKS = frozenset({"partial_reid", "partial_reid_cropped", "partial_ilids_p", "partial_ilids_o"})
"""The benchmarks whose queries are partial images (the others are holistic): the evaluation's routing groups and
the registry's headline Rank-1 split by it."""
