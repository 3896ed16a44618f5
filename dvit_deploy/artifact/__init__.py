"""Artifacts on disk (ONNX models, engines) and their JSON manifests, read without torch."""
