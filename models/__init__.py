"""Model build pipeline: PyTorch definitions, ONNX export, fusion, quantization, accuracy gate,
registration. Only this package imports torch; the worker runtime never does."""
