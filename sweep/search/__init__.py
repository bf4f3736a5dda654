"""Stage 6, search: the space, sampler and pruner, the study and its storage, the ask/tell loop.

The only package that imports optuna. The public face: ``space.SearchSpace`` (the axes and
their checks), ``settings`` (sampler and pruner presets, budgets, ``SearchError``),
``storage`` (``make_storage``: journal file, SQLite, PostgreSQL), ``study`` (``open_study``,
``load_study``: the study, its signature and stale workers), ``loop`` (``run_trials``: ask,
train through the trial stage, tell)."""
