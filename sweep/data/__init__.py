"""Stage 1-2, data: sources, reading, the vocabulary, and the corpus prepared once."""
