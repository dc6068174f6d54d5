"""Benchmarks: real-layout loaders and the synthetic benchmark generator."""
