"""The runtime the stages share: the model file (`checkpoint`), feature extraction (`features`), the CPU kernels a
result is computed with (`cpu_kernels`) and the thread count that makes it reproducible (`determinism`).

Training (`sanet.train`), evaluation, the registry and serving all use these, so none of them imports another stage
for them. Import the modules themselves; the package re-exports nothing.
"""
