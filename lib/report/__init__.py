"""Report: figures, Grad-CAM explanations and the index page of a profile's reports."""

from lib.report.index import build_index, headline_path, load_run_log, save_headline, save_run_log
