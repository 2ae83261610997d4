"""Evaluation: metrics (pure functions), statistics (intervals, tests) and the comparison of runs."""

from lib.evaluation.metrics import best_threshold, binary_metrics, per_source_metrics
from lib.evaluation.stats import holm, summarize, verdict
