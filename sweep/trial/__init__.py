"""One trial: sampled values -> the trial's config and sizes -> figures before and after training.

``TrialRunner`` (``sweep.trial.runner``) is the public face: tests, benchmarks and the trial loop
build one from a config and a ``PreparedData``."""

from sweep.trial.runner import Sizes, Timing, TrialRunner, memory_need

__all__ = ["Sizes", "Timing", "TrialRunner", "memory_need"]
