"""The ``image_bytes`` input: encoded images (JPEG, PNG, WebP) decoded and preprocessed in the server.

Clients send the file's bytes (a Triton ``BYTES`` tensor ``[B, 1]``, one encoded image per row)
instead of a preprocessed FP32 tensor (602 KB per 224 px image). The server decodes each one with
``jobs.data.decode_image`` — the checks ``dvit predict`` makes (PIL's decompression-bomb limit,
truncated or corrupt data, 16-bit and other modes to 8-bit RGB) — and applies the model's own
``data_config`` through ``jobs.data.model_input``, the transform ``predict`` uses. So a served answer
equals ``dvit predict`` on the same file. Only the JPEG, PNG and WebP decoders are tried: an
untrusted upload never reaches PIL's rarer parsers.

One bad image fails its own request (one line naming ``image_bytes[i]``), never its neighbours.

``DecodePool`` decodes the images of one Triton batch on a few threads: PIL's decoders and its
resampling, and torch's element-wise steps, release the GIL, so the images of a batch decode in
parallel where cores are free. Each image goes through the same ``decode_one``: the arrays are the
ones a serial decode makes, bit for bit.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np

from ...helpers.errors import BadInput
from ..data import decode_image, model_input

IMAGE_BYTES_NAME = "image_bytes"
SERVED_FORMATS = ("JPEG", "PNG", "WEBP")
# Bigger than any sane photo, far below what a request could make the server hold: 64 MiB per image.
MAX_ENCODED_BYTES = 64 << 20


def single_threaded_preprocessing() -> None:
    """Run the transform's torch steps (ToTensor, Normalize) on one thread, in the server's stub process.

    They touch ~150 K values per image: spread over every core they mostly wait on each other (and on
    the runner's own spinning threads); on a busy 2-core machine ToTensor took 45 ms on 2 threads and
    under 1 ms on one. Element-wise work: the values are the same either way."""
    import torch

    torch.set_num_threads(1)


def blobs_of(value: Any) -> list[bytes]:
    """The encoded images of one request's ``image_bytes`` tensor (``[B, 1]`` or ``[B]`` of bytes)."""
    array = np.asarray(value, dtype=object)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.size == 0:
        raise BadInput(f"{IMAGE_BYTES_NAME} must be BYTES [B, 1] with one encoded image per row, got shape "
                       f"{list(np.shape(value))}")
    blobs = []
    for index, item in enumerate(array.tolist()):
        if isinstance(item, str):  # a client that sent text: never an image
            raise BadInput(f"{IMAGE_BYTES_NAME}[{index}] is text, not an encoded image's bytes")
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise BadInput(f"{IMAGE_BYTES_NAME}[{index}] is {type(item).__name__}, not an encoded image's bytes")
        blobs.append(bytes(item))
    return blobs


def decode_one(blob: bytes, index: int, data_config: Mapping[str, Any]) -> np.ndarray:
    """One encoded image -> the (3, H, W) float32 the model takes (BadInput naming ``image_bytes[index]``)."""
    name = f"{IMAGE_BYTES_NAME}[{index}]"
    if not blob:
        raise BadInput(f"{name} is empty")
    if len(blob) > MAX_ENCODED_BYTES:
        raise BadInput(f"{name} is {len(blob):,} bytes, more than the {MAX_ENCODED_BYTES:,} an encoded image may have")
    try:
        return model_input(decode_image(io.BytesIO(blob), name, formats=SERVED_FORMATS), data_config)
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder's odd failure on hostile data is still this image's fault
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise BadInput(f"cannot read image {name}: {type(exc).__name__}{': ' + reason if reason else ''}") from None


def decode_images(value: Any, data_config: Mapping[str, Any]) -> np.ndarray:
    """One request's ``image_bytes`` as the (B, 3, H, W) float32 batch ``predict`` would make of the files."""
    return np.ascontiguousarray(np.stack([decode_one(blob, i, data_config) for i, blob in enumerate(blobs_of(value))]))


def decode_workers() -> int:
    """Threads for ``DecodePool``: the CPUs this process may run on (at most 8)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _attempt(blob: bytes, index: int, data_config: Mapping[str, Any]) -> np.ndarray | BadInput:
    try:
        return decode_one(blob, index, data_config)
    except BadInput as exc:
        return exc


class DecodePool:
    """Decode several requests' ``image_bytes`` at once, image by image on ``workers`` threads.

    ``decode(values)`` gives, per request, its (B, 3, H, W) float32 batch or the BadInput that refuses
    it: the first bad image by row, as ``decode_images`` would raise it. One image is decoded on the
    calling thread (no hand-off for the batch-1 case)."""

    def __init__(self, data_config: Mapping[str, Any], workers: int | None = None) -> None:
        self.data_config = data_config
        self.workers = decode_workers() if workers is None else max(1, int(workers))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dvit-decode") if self.workers > 1 else None

    def decode(self, values: list[Any]) -> list[np.ndarray | BadInput]:
        found: list[Any] = []
        for value in values:
            try:
                found.append(blobs_of(value))
            except BadInput as exc:
                found.append(exc)
        jobs = [(r, i, blob) for r, blobs in enumerate(found) if isinstance(blobs, list) for i, blob in enumerate(blobs)]
        if self._pool is not None and len(jobs) > 1:
            images = list(self._pool.map(lambda job: _attempt(job[2], job[1], self.data_config), jobs))
        else:
            images = [_attempt(blob, i, self.data_config) for _, i, blob in jobs]
        per_request: list[list[Any]] = [[] for _ in values]
        for (r, _, _), image in zip(jobs, images):
            per_request[r].append(image)
        answers: list[np.ndarray | BadInput] = []
        for blobs, decoded in zip(found, per_request):
            bad = blobs if isinstance(blobs, BadInput) else next((d for d in decoded if isinstance(d, BadInput)), None)
            answers.append(bad if bad is not None else np.ascontiguousarray(np.stack(decoded)))
        return answers

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
