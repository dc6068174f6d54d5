"""The evaluate stage: `stage.run_evaluate` (`sanet evaluate`) ranks a benchmark's gallery for its queries with the
trained model and writes metrics, the CMC, ranked lists (`ranked_list`), the AFE routing (`routing`) and the method
diagnostics (`diagnostics/`). The package re-exports nothing.
"""
