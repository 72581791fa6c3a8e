"""Exports of the integer model to other runtimes: ONNX (onnxruntime, OpenCV DNN) and QONNX (FINN).

Optional: these modules need the `export` extra (onnx, onnxruntime, qonnx); the numpy engine
and the detector never import them unless an `.onnx` model is loaded. docs/EXPORT.md
describes the graphs.
"""
