"""One trial: sampled values -> the trial's config and sizes -> figures before and after training.

``TrialRunner`` (``sweep.trial.runner``) is the public face: tests, benchmarks and the trial loop
build one from a config and a ``PreparedData``. Its jobs are one module each: ``sizes`` (the
columns known before training; ``Sizes``, a trial's table, is its front-end kind's:
``sweep.models.frontends``), ``probe`` (the memory probe), ``lone`` (training alone),
``pack`` (training in packs), ``timing`` (where the sweep's time goes); ``recipe`` picks the
keys a study leaves at ``auto`` (learning rate, head, word bigrams) with a short probe."""

from sweep.models.frontends import Sizes
from sweep.trial.runner import TrialRunner
from sweep.trial.sizes import memory_need
from sweep.trial.timing import Timing

__all__ = ["Sizes", "Timing", "TrialRunner", "memory_need"]
