"""visionloop: the continuous-training loop for computer-vision models, as one package."""

__version__ = "0.1.0"
