"""Method diagnostics of every evaluation (DESIGN section 5, GitHub issue 16): is the method doing what it claims?

Headline metrics say how well a model ranks, not why. These modules measure the mechanisms SANet's claims rest on,
one job each, so that a model that ranks by accident (or a colour histogram that ranks as well) is seen as such:

| module | what |
|---|---|
| `visibility` | predicted visibility (Eq. 5) against the mask stage's labels, per part, queries and gallery apart |
| `masks` | how much the predicted part masks vary across images (a constant mask carries no part information) |
| `afe` | the AFE's share of the features: how much it changes the layer3 features it receives |
| `global_only` | the ranking with the global branch alone, beside the part-aware distance (Eq. 7) |
| `floor` | the no-network floor: a colour histogram of the person pixels, ranked under the same protocol |
| `summary` | everything together as `diagnostics.json`, and the flat headline numbers for `metrics.json` |
| `figure` | `diagnostics.png`, one figure of the above |

The AFE routes (Fig. 4a) are summarised by `sanet.evaluation.routing` (`route_statistics`), which `summary` reuses.
"""

from sanet.evaluation.diagnostics.afe import AFEShareMeter
from sanet.evaluation.diagnostics.figure import write_diagnostics_figure
from sanet.evaluation.diagnostics.floor import FloorResult, chance_rank1, colour_histogram_floor, person_histogram
from sanet.evaluation.diagnostics.global_only import global_only_features, global_only_metrics
from sanet.evaluation.diagnostics.masks import mask_variation
from sanet.evaluation.diagnostics.summary import compute_diagnostics, headline_metrics
from sanet.evaluation.diagnostics.visibility import label_visibility, visibility_accuracy

__all__ = [
    "AFEShareMeter",
    "FloorResult",
    "chance_rank1",
    "colour_histogram_floor",
    "compute_diagnostics",
    "global_only_features",
    "global_only_metrics",
    "headline_metrics",
    "label_visibility",
    "mask_variation",
    "person_histogram",
    "visibility_accuracy",
    "write_diagnostics_figure",
]
