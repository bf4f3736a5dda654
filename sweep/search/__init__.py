"""Stage 6, search: the space, sampler and pruner, the study and its storage, the ask/tell loop."""
