"""Statistics, torch-free: bootstrap resampling, residual knowledge, per-item metrics and the verdict.

``bootstrap`` (resampling weights, aggregates under weights), ``residual`` (a cell's residual and interval),
``metrics`` (ROUGE-L, containment, truth ratio, ROC) and ``gate`` (the one place that compares cells with
the policy's thresholds: cell outcomes, the certified bound, the verdict, the exit code).
"""
