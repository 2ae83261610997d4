"""Report: figures, Grad-CAM explanations and the index page (the study's dashboard) of a profile's reports."""

from lib.report.index import build_index, headline_path, load_run_log, save_dataset_summary, save_headline, save_run_log
