"""The source documents' numbers, one module per source, each with its citation (docs/sources.md).

  tutorial.py   the init-scale convergence tutorial: Table 1 (test accuracy per sigma), its init and epochs
  paper.py      the scaling-calculus paper: the Section 9 table (four init schemes over 26 LIBSVM sets)
  question.py   the feature-vs-weight-scaling question: its scale factor (its claims are not numbers)

An experiment's config and section import the numbers they compare against from here, never from another
experiment. The explainer and the blog (the `activations` and `symmetry` experiments) state no numbers.
Pure data: importing these reads no file and imports no experiment.
"""
