"""A minimal stand-in for the ``torch.cuda`` pieces the TensorRT runner touches (kept apart from the
TensorRT fake). Tensors stay on the CPU; streams and CUDA graphs only count what was asked of them.
Nothing here says anything about CUDA behaviour: it lets the runner's TensorRT calls be checked.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch


class FakeStream:
    def __init__(self, device=None):
        self.cuda_stream = 0x5EED  # an int handle, as torch.cuda.Stream.cuda_stream is
        self.waited = 0
        self.synchronized = 0

    def wait_stream(self, other):
        self.waited += 1

    def synchronize(self):
        self.synchronized += 1


class FakeGraph:
    instances: list["FakeGraph"] = []

    def __init__(self):
        self.replays = 0
        self.captured = False
        FakeGraph.instances.append(self)

    def replay(self):
        self.replays += 1


@contextlib.contextmanager
def _graph(graph, stream=None):
    graph.captured = True
    yield


@contextlib.contextmanager
def _stream(stream):
    yield


def install(monkeypatch, *, name: str = "NVIDIA A100-SXM4-80GB", cc: tuple[int, int] = (8, 0)) -> None:
    from dvit_deploy.runtime import trt_runner

    FakeGraph.instances = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(name=name, major=cc[0], minor=cc[1]))
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", _stream)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", _graph)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None, raising=False)
    monkeypatch.setattr(trt_runner, "torch_device", lambda torch_module, name: torch_module.device("cpu"))
