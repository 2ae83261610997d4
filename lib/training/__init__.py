"""Training: the model-agnostic loop (`fit`), the run store (run keys, atomic run folders, resume) and executors."""

from lib.executors import EXECUTORS, get_executor
from lib.training.fit import TrainConfig, fit, predict, seed_everything
from lib.training.runstore import CVJob, RunSpec, collect_predictions, load_model, load_run, run_cv, run_cv_many
