"""The PyTorch backend: the model rebuilt from an artifact's model record, on CPU or CUDA.

It is also the reference ``dvit validate`` compares every other backend against. Lower
precisions use autocast and exist on CUDA only: CPU autocast would measure a different
(and on most CPUs slower) kernel path than what users deploy, so it is refused outright.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..artifact.store import Artifact
from ..helpers.errors import BadInput, DvitError
from ..export.onnx_export import token_output_name
from ..models import WithKeptTokens, kept_patch_ids
from .base import Runner, RunOutput, TensorInfo, check_cuda_index

TORCH_PRECISIONS = ("fp32", "fp16", "bf16")


class TorchRunner(Runner):
    backend = "torch"
    needs = "an Artifact whose model it rebuilds (Artifact.of(path, manifest) for one held in memory)"

    def __init__(self, artifact: Artifact, *, compile: bool = False, intra_op_threads: int | None = None,
                 cuda_graph: bool = False, loaded: Any = None, trust: bool | None = None, **common: Any) -> None:
        """``loaded``: an already built ``LoadedModel`` (skips rebuilding from ``artifact.model``).
        ``common``: ``Runner``'s keywords (device, precision, topk_outputs); ``topk_outputs`` changes nothing
        here: the PyTorch model always reports its kept tokens."""
        super().__init__(artifact, **common)
        self.compile = compile
        self.intra_op_threads = intra_op_threads
        self.cuda_graph = cuda_graph
        self.trust = trust
        self.loaded = loaded
        self._module = None
        self._previous_threads: int | None = None
        self._graphs: list[Any] = []  # keeps captured CUDA graphs (and their memory) alive until close

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self) -> "TorchRunner":
        import torch

        if self.precision not in TORCH_PRECISIONS:
            raise BadInput(f"the torch backend runs {', '.join(TORCH_PRECISIONS)}, not '{self.precision}'")
        if self.device == "cpu":
            if self.precision != "fp32":
                raise BadInput(f"the torch backend runs {self.precision} only on CUDA (autocast); "
                               "on CPU use fp32")
            if self.cuda_graph:
                raise BadInput("CUDA graphs need --device cuda")
        else:
            check_cuda_index(self.device, torch.cuda.device_count())
        if self.intra_op_threads is not None:
            if self.intra_op_threads < 1:
                raise BadInput(f"intra-op threads must be ≥ 1, got {self.intra_op_threads}")
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.intra_op_threads)
        try:
            self._build_module()
        except BaseException:
            self.close()  # a failed load must not leave the process thread count changed
            raise
        return self

    def _build_module(self) -> None:
        import torch

        if self.loaded is None:
            from ..models.checkpoint import load_model_from_record

            self.loaded = load_model_from_record(self.artifact.model, context=self.artifact.context, trust=self.trust)
        model = self.loaded.model.eval().to(self.device)
        self.num_patches = self.loaded.variant.num_patches
        module: Any = WithKeptTokens(model).eval()
        if self.compile:
            try:
                module = torch.compile(module)
            except Exception as exc:  # backend/compiler problems surface as many types
                raise BadInput(f"torch.compile failed: {str(exc).splitlines()[0][:200]}") from None
        self._module = module

    def close(self) -> None:
        self._graphs.clear()
        self._module = None
        if self._previous_threads is not None:
            import torch

            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None

    # -- description -------------------------------------------------------------------------
    def _image_shape(self) -> tuple[int, int, int]:
        if self.loaded is not None:
            v = self.loaded.variant
            return v.in_chans, v.img_size, v.img_size
        return self.artifact.model.input_shape

    @property
    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo("images", "float32", ("batch", *self._image_shape()))]

    @property
    def outputs(self) -> list[TensorInfo]:
        counts = list(self.loaded.keep_counts) if self.loaded is not None else list(self.artifact.model.keep_counts)
        num_classes = self.loaded.variant.num_classes if self.loaded is not None else self.artifact.model.num_classes
        return [TensorInfo("logits", "float32", ("batch", num_classes))] + [
            TensorInfo(token_output_name(s + 1), "int64", ("batch", k)) for s, k in enumerate(counts)
        ]

    def _executes(self) -> str:
        import torch

        return (f"torch {torch.__version__} {'eager' if not self.compile else 'torch.compile'}"
                + ("" if self.device == "cpu" else f" on {torch.cuda.get_device_name(self.device)}"))

    def _threads(self) -> int | None:
        import torch

        return torch.get_num_threads() if self.device == "cpu" else None

    def _details(self) -> dict[str, Any]:
        return dict(
            executes=self._executes(),
            compile=self.compile,
            cuda_graph=self.cuda_graph,
            intra_op_threads=self._threads(),
            autocast=self.precision if self.precision != "fp32" else None,
        )

    # -- execution ---------------------------------------------------------------------------
    def _require_loaded(self) -> Any:
        if self._module is None:
            raise DvitError("runner used before load(): use 'with open_runner(...) as runner'")
        return self._module

    def _autocast(self):
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        # No weight-cast cache: CUDA-graph capture must not keep casts made outside the graph.
        return torch.autocast(device_type="cuda", dtype=dtype, cache_enabled=False)

    def _forward(self, x):
        import torch

        module = self._require_loaded()
        try:
            with torch.inference_mode(), self._autocast():
                return module(x)
        except DvitError:
            raise
        except Exception as exc:
            if self.compile:  # inductor compiles on first call; report its failure as one line
                raise DvitError(f"torch.compile failed while running: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200]}") from None
            raise

    @property
    def has_token_info(self) -> bool:
        return not self.artifact.model.dense  # the torch model returns every stage's TopK indices

    def run(self, images: np.ndarray, *, keep_counts: np.ndarray | None = None) -> RunOutput:
        import torch

        if keep_counts is not None:
            raise BadInput("the torch backend runs the manifest's keep schedule; per-call keep counts need "
                           "onnxruntime, openvino or tensorrt")
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        logits, *indices = self._forward(x)
        kept = None
        if indices:
            kept = [ids.cpu().numpy() for ids in kept_patch_ids(list(indices), self.num_patches,
                                                                  compose=self.compose_ids)]
        return RunOutput(logits=logits.float().cpu().numpy(), kept=kept)

    def timed_call(self, images: np.ndarray, *, include_transfer: bool = False) -> Callable[[], float | None]:
        """One synchronised inference per call. On CUDA the call returns the CUDA-event time (ms)."""
        import torch

        host = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        if self.device == "cpu":
            def call_cpu() -> None:
                self._forward(host)
            return call_cpu

        host = host.pin_memory()
        staged = host.to(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        work = self._captured(staged) if self.cuda_graph else (lambda: self._forward(staged))

        def call_cuda() -> float:
            start.record()
            if include_transfer:
                staged.copy_(host, non_blocking=True)
            outputs = work()
            if include_transfer:
                outputs[0].to("cpu", non_blocking=True)
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

        return call_cuda

    def _captured(self, staged):
        """Capture one forward pass in a CUDA graph; replaying it removes per-kernel launch cost."""
        import torch

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm up allocations and autotuning before capture
                self._forward(staged)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self._forward(staged)
        self._graphs.append((graph, outputs))

        def replay():
            graph.replay()
            return outputs

        return replay
