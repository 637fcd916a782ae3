"""Errors raised by the model build pipeline."""


class ModelError(Exception):
    """Root of every error raised by agentq model building."""


class AccuracyGateFailed(ModelError):
    """A built variant is not accurate enough compared with its PyTorch reference."""


class UnknownModel(ModelError):
    """No builder exists for the requested model name."""


class BuildStackMissing(ModelError):
    """The model is not built yet and the ``build`` extra (torch, onnx, ...) is not installed."""


class SpeedGateFailed(ModelError):
    """A quantized variant is not enough faster than the exact graph to be worth its error."""
