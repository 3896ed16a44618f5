"""dvit-deploy: DynamicViT from checkpoint to ONNX, TensorRT and the edge."""

__version__ = "0.1.0"
