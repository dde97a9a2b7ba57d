"""Training: config, the ultralytics adapter, ONNX export + parity, evaluation, the pipeline.

Import submodules directly (``from visionloop.training.evaluate import evaluate_model``);
this package imports nothing heavy itself. Serving code must never import it.
"""
