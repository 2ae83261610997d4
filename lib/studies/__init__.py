"""Studies: one module per notebook (eda, phase2, phase3, phase4, gradcam, npr) over the layers below."""
