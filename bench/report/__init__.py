"""Reports from stored rows: the short table, the claims report, figures, regression comparison, statistics.

Reports read result tables (bench/store/) and never import the harness or torch; the claims report's
GPU-free predictions at the paper's point call bench/estimate/ lazily.
"""
