"""``python -m sweep.report``: the reports rebuilt from a study storage."""

from sweep.report.build import main

main()
