"""Models: detectors by name (`create_model`, as timm); each module registers its own architectures."""

from lib.models.registry import (count_parameters, create_model, gradcam_reshape_transform, gradcam_target_layers,
                                 list_models, model_info, model_revision, register_model, weight_candidates, weight_file_name)
from lib.models import artefacts, backbones, cnn, npr, srm  # noqa: F401  importing them registers their models
from lib.models.cnn import CifakeCNN, SimpleCNN
from lib.models.npr import MultiScaleNPR, NPRNet, npr_crop_size, npr_map
