"""What a CPU result depends on besides the seed: the number of intra-op threads.

torch splits reductions (convolution and matrix-product sums, batch-norm statistics) over its intra-op threads, and
the order of a floating-point sum changes its last bits, which 20 epochs of SGD grow into different weights (on the
demo profile, 1 thread instead of 2 already changed Rank-1 after one epoch). torch's default is the number of cores
of the machine, or `OMP_NUM_THREADS`: a result would then depend on where it ran. `train.threads` fixes it; with the
same count, reruns are bit-identical whatever the load of the machine (the static OpenMP schedule does not adapt to
load; the DataLoader's workers run one thread each, and every item's augmentation is seeded by the sampler).

What is not fixed here: the CPU's instruction set (torch picks AVX-512, AVX2, ... kernels at start-up, and oneDNN
and MKL pick theirs) also changes the last bits (on the demo, AVX2 instead of AVX-512 changed Rank-1 after one
epoch); `train.cpu_kernels` pins those kernels before torch runs (`sanet.engine.cpu_kernels`).
`train.deterministic` changed no bit of a CPU training in our tests: it matters on CUDA.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["set_threads", "threads_during"]


def set_threads(threads: int) -> int:
    """Use `threads` intra-op threads (0: leave torch's default, the machine's cores); returns the count in use."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@contextmanager
def threads_during(threads: int) -> Iterator[int]:
    """`set_threads(threads)` for a block, the caller's count back after it: a stage's count is not its caller's."""
    previous = torch.get_num_threads()
    try:
        yield set_threads(threads)
    finally:
        set_threads(previous)
