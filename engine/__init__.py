"""The inference engine: ONNX Runtime sessions per model per device, the shared-memory slab,
the engine process, its client and their wire protocol."""
