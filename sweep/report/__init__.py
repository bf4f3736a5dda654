"""Stage 7, report: trials.csv, pareto.csv, report.html and the multirun summary.

The public face: ``build`` (``write_reports``: every report from a study's storage alone;
``python -m sweep.report``), ``page`` (report.html from its Jinja2 templates), ``plots``
(the SVG charts), ``summary`` (``summarize``: the multirun summary)."""
