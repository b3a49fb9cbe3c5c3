"""Developer tools shipped with lowbit (random-weight models for benchmarks, ...)."""
