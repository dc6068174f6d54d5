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
