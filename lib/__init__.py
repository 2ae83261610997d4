"""fakedet lab: loaders, models, training, metrics and statistics for AI-generated image detection."""

__version__ = "0.1.0"
