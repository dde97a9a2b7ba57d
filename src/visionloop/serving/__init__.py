"""The inference server: ONNX Runtime, numpy pre/post-processing, hot swap, captures, metrics.

Nothing here imports torch or ultralytics (a server image stays small and starts fast);
``tests/test_serving_unit.py`` checks that in a fresh interpreter.
"""
