"""fakedet lab: loaders, models, training, metrics and statistics for AI-generated image detection."""

import os

# Idle OpenMP threads sleep instead of spin-waiting: on a busy 2-core machine spinning made training up to 14x
# slower. Only effective when lib is imported before torch (run_all.py also sets it for the notebook kernels).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
