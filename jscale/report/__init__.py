"""The report: a generic `report.md` builder over saved results; it knows no experiment.

  document.py   Section / Table / Figure, rendering, `build_report(run_dir, sections)`
  describe.py   what any experiment's results say about their grid, settings, data and run
  stats.py      means with 95% intervals, single-run prediction intervals, verdicts against a source
  format.py     how numbers, lists and setting values are written
  plots.py      the figures (matplotlib, no pyplot)
  sigma_markers.py  the sigma an init rule amounts to (marks on accuracy-vs-sigma figures)

Each experiment's own section lives in its folder, `jscale/experiments/<name>/section.py`.
"""
from jscale.report import describe, plots, sigma_markers, stats
from jscale.report.document import (Figure, ReportResult, Section, Table, build_report, render_section, render_table,
                                    write_verdicts)
from jscale.report.format import fmt, fmt_list, label
from jscale.report.stats import (CI, UNIT, Verdict, ci_text, finite_mean_ci95, fmt_ci, judge, mean_ci95,
                                 prediction_interval, verdict_text)
