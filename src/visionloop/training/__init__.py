"""Training: config, the ultralytics adapter, ONNX export + parity, evaluation, the pipeline.

``pipeline`` (plan, cache hit, run) drives ``steps`` (one function per step, typed results),
with ``cache`` (input-hash work directories), ``tracking`` (the MLflow run) and ``events``
(progress callbacks; the CLI draws them). Import submodules directly
(``from visionloop.training.evaluate import evaluate_model``); this package imports nothing
heavy itself. Serving code must never import it.
"""
