"""Stage 7, report: trials.csv, pareto.csv, report.html and the multirun summary."""
