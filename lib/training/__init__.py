"""Training: the model-agnostic loop (`fit`) and the run store (run keys, atomic run folders, resume)."""

from lib.training.fit import TrainConfig, fit, predict, seed_everything
from lib.training.runstore import RunSpec, collect_predictions, load_model, load_run, run_cv
