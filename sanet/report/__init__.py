"""`sanet report`: the paper-comparison report (`reports/benchmark.md`), its PNG figures and one MLflow run.

For whoever runs the benchmark or reviews a result: it puts our numbers on the six benchmarks beside the paper's
(Tables 1 and 2, and the ablations of Tables 3 and 4 when `make ablations` has run them), with the full metrics,
training curves, each benchmark's protocol and the provenance of the runs. The Markdown and the PNGs are
byte-identical for the same inputs, so that DVC sees an unchanged output as unchanged.

One job per module: `inputs` reads and checks what `sanet evaluate` and `sanet train` wrote, `ablations` finds the
runs of Tables 3 and 4 in MLflow, `formatting` formats the numbers, `markdown` writes the report, `terminal` the
table `make demo` prints, `figures` the PNGs, and `stage` (`run_report`) ties them together in one MLflow run.
"""
