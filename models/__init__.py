"""Models: the catalogue (one entry per model) and each model's own module; the build pipeline
(PyTorch definitions, ONNX export, fusion, quantization, accuracy gate, registration). Only the
builders import torch; the worker runtime never does."""
