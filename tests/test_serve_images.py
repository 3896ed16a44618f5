"""The ``image_bytes`` input of `dvit serve`: encoded JPEG/PNG/WebP decoded and preprocessed in the server.

Decode/check paths and the handler's per-request errors are tested without Triton (a stand-in runner);
parity with ``dvit predict`` and a batch mixing bad and good images go through one real tritonserver.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dvit_deploy.helpers.errors import BadInput
from dvit_deploy.jobs.data import normalize_data_config, preprocess_images
from dvit_deploy.jobs.serve.decode import IMAGE_BYTES_NAME, decode_images
from dvit_deploy.jobs.serve.handler import Request, RequestHandler
from dvit_deploy.jobs.serve.spec import ServeSpec
from dvit_deploy.models.config import VARIANTS

DATA_CONFIG = normalize_data_config(VARIANTS["deit-s"].data_config())


def photo(size=(320, 240), seed=0, mode="RGB") -> Image.Image:
    """A smooth picture with some texture (what a camera makes; noise alone would be an odd JPEG)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    channels = [np.sin(x / (9 + 5 * c) + seed) * np.cos(y / (13 + 3 * c)) * 90 + 128 for c in range(3)]
    rgb = np.clip(np.stack(channels, -1) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    if mode == "I;16":  # 16-bit grayscale: predict scales it by 65535, never clips it at 255
        return Image.fromarray((np.asarray(img.convert("L"), np.uint16) * 257).astype(np.uint16))
    return img.convert(mode)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width``×``height`` (no pixel data): refused before any decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def as_tensor(*blobs: bytes) -> np.ndarray:
    return np.asarray([[b] for b in blobs], dtype=object)


def test_decoded_image_bytes_equal_predict_preprocessing_of_the_files(tmp_path):
    """Same bytes as a file through predict's preprocess_images, and through the server's decode: identical arrays."""
    cases = {"a.jpg": encode(photo(seed=1), "JPEG", quality=90),
             "b.png": encode(photo((200, 300), seed=2), "PNG"),
             "c.webp": encode(photo(seed=3), "WEBP", quality=80),
             "d16.png": encode(photo((260, 250), seed=4, mode="I;16"), "PNG"),  # 16-bit
             "e.png": encode(photo(seed=5, mode="RGBA"), "PNG"),  # alpha composited on white
             "f.jpg": encode(photo(seed=6, mode="L"), "JPEG")}  # grayscale
    paths = []
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        paths.append(tmp_path / name)
    assert Image.open(paths[3]).mode == "I;16"
    want = preprocess_images(paths, DATA_CONFIG)
    got = decode_images(as_tensor(*cases.values()), DATA_CONFIG)
    assert got.shape == (6, 3, 224, 224) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert got[3].min() < 0.0, "the 16-bit image kept its range (not clipped to white)"
    np.testing.assert_array_equal(decode_images(np.asarray(list(cases.values()), dtype=object)[:1], DATA_CONFIG),
                                  want[:1])  # a [B] tensor as well as [B, 1]


@pytest.mark.parametrize("blob, message", [
    (b"definitely not an image", "image_bytes[1] is not an image PIL can read (JPEG, PNG, WebP)"),
    (b"", "image_bytes[1] is empty"),
    ("truncated", "cannot read image image_bytes[1]:"),
    ("bmp", "image_bytes[1] is not an image PIL can read (JPEG, PNG, WebP)"),  # only the three decoders are tried
    ("gif", "image_bytes[1] is not an image PIL can read (JPEG, PNG, WebP)"),
    ("bomb", "image_bytes[1] is too large to decode safely (more than 89,478,485 pixels"),
])
def test_bad_image_bytes_are_refused_in_one_line_naming_the_image(blob, message):
    good = encode(photo(), "JPEG")
    blob = {"truncated": good[: len(good) // 2], "bmp": encode(photo(), "BMP"), "gif": encode(photo(), "GIF"),
            "bomb": png_claiming(10_000, 10_000)}.get(blob, blob)
    with pytest.raises(BadInput) as caught:
        decode_images(as_tensor(good, blob), DATA_CONFIG)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)


def test_image_bytes_tensor_shape_and_element_type_are_checked():
    for value, message in [(np.asarray([["x", "y"]], dtype=object), "must be BYTES [B, 1]"),
                           (np.zeros((0, 1), dtype=object), "must be BYTES [B, 1]"),
                           (np.asarray([["text"]], dtype=object), "image_bytes[0] is text"),
                           (np.asarray([[3]], dtype=object), "image_bytes[0] is int")]:
        with pytest.raises(BadInput, match=message.replace("[", r"\[")):
            decode_images(value, DATA_CONFIG)


# --------------------------------------------------------------------------------------------
def spec_for(data_config=DATA_CONFIG, **changes) -> ServeSpec:
    fields = dict(artifact="/nowhere/m.onnx", backend="onnxruntime", precision="fp32", name="m", max_batch=8,
                  queue_delay_us=100, dynamic_batching=True, image_shape=(3, 224, 224), num_classes=3,
                  fixed_batch=None, num_stages=3, num_patches=196, dense=True, keep_ratio=None, dynamic_keep=False,
                  keep_range=None, token_outputs=False, data_config=data_config)
    return ServeSpec(**{**fields, **changes})


class ChannelMeans:
    """A stand-in runner: logits = each image's channel means, so every answer can be traced to its image."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, batch: np.ndarray):
        self.batches.append(len(batch))
        return SimpleNamespace(logits=batch.mean(axis=(2, 3)), kept=None)


def test_handler_answers_the_good_images_of_a_batch_and_refuses_the_bad_ones_alone():
    jpeg, png = encode(photo(seed=1), "JPEG"), encode(photo(seed=2), "PNG")
    fp32 = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    runner = ChannelMeans()
    handler = RequestHandler(runner, spec_for())
    responses = handler.handle([
        Request(None, image_bytes=as_tensor(jpeg)),
        Request(None, image_bytes=as_tensor(png, b"\x89PNG\r\n\x1a\n garbage")),  # one bad image: the whole request
        Request(fp32),  # the FP32 input still works beside image_bytes
        Request(None, image_bytes=as_tensor(png, jpeg)),
        Request(fp32[:1], image_bytes=as_tensor(jpeg)),
        Request(None),
    ])
    assert [r.error for r in responses] == [
        None, "cannot read image image_bytes[1]: " + responses[1].error.split(": ", 1)[1], None, None,
        "send images or image_bytes in one request, not both",
        "send images (FP32, preprocessed) or image_bytes (encoded JPEG/PNG/WebP)"]
    assert all("\n" not in (r.error or "") for r in responses)
    assert runner.batches == [5], "the good requests ran together in one runner call"
    decoded = decode_images(as_tensor(jpeg, png), DATA_CONFIG)
    np.testing.assert_allclose(responses[0].outputs["logits"], decoded[:1].mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(responses[2].outputs["logits"], fp32.mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(responses[3].outputs["logits"], decoded[::-1].mean(axis=(2, 3)), rtol=1e-6)


def test_without_a_data_config_only_images_is_served():
    spec = spec_for(data_config=None)
    config = spec.triton_config()
    assert IMAGE_BYTES_NAME not in config and "optional" not in config
    response = RequestHandler(ChannelMeans(), spec).handle([Request(None, image_bytes=as_tensor(b"x"))])[0]
    assert response.error == "this model serves no image_bytes input (its manifest records no preprocessing)"
    response = RequestHandler(ChannelMeans(), spec).handle([Request(None)])[0]
    assert response.error == "send images (FP32, preprocessed)"


def test_triton_config_declares_both_inputs_optional():
    config = spec_for().triton_config()
    pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] is in the dev extra")
    from google.protobuf import text_format

    parsed = text_format.Parse(config, pb2.ModelConfig())
    inputs = {i.name: i for i in parsed.input}
    assert set(inputs) == {"images", IMAGE_BYTES_NAME}
    assert inputs[IMAGE_BYTES_NAME].data_type == pb2.TYPE_STRING and list(inputs[IMAGE_BYTES_NAME].dims) == [1]
    assert inputs["images"].optional and inputs[IMAGE_BYTES_NAME].optional


# --------------------------------------------------------------------------------------------
# Through a real tritonserver: one server, a fixed-ρ tiny export with token outputs. Batches of up to
# 4 rows wait up to 4 s for each other, so the 4 concurrent requests below form one Triton batch.
@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    pytest.importorskip("pytriton", reason='dvit serve needs nvidia-pytriton: pip install "dvit-deploy[serve]"')
    from tests.test_serve import Server  # noqa: PLC0415 - that module skips itself without tritonclient

    from dvit_deploy.export import export_onnx
    from dvit_deploy.models.checkpoint import load_model

    folder = tmp_path_factory.mktemp("serve_images")
    artifact = export_onnx(load_model(model_name="tiny-deit", keep_ratio=0.8), folder / "tiny-img.onnx",
                           token_outputs=True, check_samples=2).path
    server = Server(artifact, "--max-batch", "4", "--max-queue-delay-us", "4000000")
    yield server, artifact
    code, stderr = server.stop()
    assert code == 0, stderr


def send(module, client, value: np.ndarray, name: str = IMAGE_BYTES_NAME) -> dict[str, np.ndarray]:
    inputs = [module.InferInput(name, list(value.shape), "BYTES" if name == IMAGE_BYTES_NAME else "FP32")]
    inputs[0].set_data_from_numpy(value)
    result = client.infer("tiny-img", inputs)
    names = ["logits", "keep_ratio"] + [f"kept_patch_ids_stage{s}" for s in (1, 2, 3)]
    return {n: result.as_numpy(n) for n in names}


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_served_image_bytes_equal_dvit_predict_on_the_same_files(image_server, tmp_path):
    from dvit_deploy.artifact.store import open_artifact
    from .job_calls import predict
    from dvit_deploy.runtime import open_runner
    import tritonclient.http as http

    server, artifact = image_server
    files = {"cat.jpg": encode(photo((400, 300), seed=21), "JPEG", quality=90),
             "dog.png": encode(photo((240, 320), seed=22), "PNG")}
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    expected = predict([tmp_path / n for n in files], artifact, backend="onnxruntime", top_k=5, want_kept=True)
    with open_runner("onnxruntime", open_artifact(artifact)) as runner:
        logits = runner.run(expected.images).logits  # what predict's top-5 were computed from
    out = send(http, server.http(), as_tensor(*files.values()))
    np.testing.assert_allclose(out["logits"], logits, atol=1e-5, rtol=1e-5)
    probs = softmax(out["logits"].astype(np.float64))
    for row, prediction in enumerate(expected.predictions):
        top = [c.index for c in prediction.top]
        np.testing.assert_allclose(probs[row, top], [c.probability for c in prediction.top], atol=1e-5)
        assert np.delete(probs[row], top).max() <= prediction.top[-1].probability + 1e-5, "same top-5"
    for stage, ids in enumerate(expected.kept, start=1):  # kept tokens as sets (TopK's tie order is unspecified)
        assert [set(r) for r in out[f"kept_patch_ids_stage{stage}"]] == [set(r) for r in ids]
    np.testing.assert_allclose(out["keep_ratio"], 0.8)


def test_a_bad_image_fails_its_own_request_and_the_rest_of_the_batch_is_answered(image_server):
    import tritonclient.grpc as grpc
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    server, artifact = image_server
    jpeg, png = encode(photo((300, 300), seed=31), "JPEG"), encode(photo(seed=32), "PNG")
    requests = [  # (protocol, input, value, expected error or None)
        (grpc, IMAGE_BYTES_NAME, as_tensor(jpeg), None),
        (http, IMAGE_BYTES_NAME, as_tensor(png), None),
        (http, IMAGE_BYTES_NAME, as_tensor(b"GIF89a, or so it says"),
         ("400", "image_bytes[0] is not an image PIL can read (JPEG, PNG, WebP)")),
        (grpc, IMAGE_BYTES_NAME, as_tensor(jpeg[: len(jpeg) // 3]),
         ("StatusCode.INVALID_ARGUMENT", "cannot read image image_bytes[0]: ")),
    ]
    stats = server.http()

    def batches_of_four() -> int:  # executions of a 4-row batch: only the requests below make one
        found = stats.get_inference_statistics("tiny-img")["model_stats"][0].get("batch_stats", [])
        return sum(int(b["compute_infer"]["count"]) for b in found if int(b["batch_size"]) == 4)

    before = batches_of_four()

    def one(request):
        module, name, value, _ = request
        client = server.http() if module is http else server.grpc()
        try:
            return send(module, client, value, name)
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(one, requests))
    deadline = time.monotonic() + 10  # Triton updates its statistics just after the responses go out
    while batches_of_four() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert batches_of_four() == before + 1, "the four requests were one Triton batch"
    good = decode_images(as_tensor(jpeg, png), DATA_CONFIG)
    from dvit_deploy.artifact.store import open_artifact
    from dvit_deploy.runtime import open_runner

    with open_runner("onnxruntime", open_artifact(artifact)) as runner:
        want = [runner.run(good[:1]).logits, runner.run(good[1:]).logits]
    for answer, logits in zip(answers[:2], want):
        assert isinstance(answer, dict), answer
        np.testing.assert_allclose(answer["logits"], logits, atol=1e-5, rtol=1e-5)
    # The FP32 input is still served beside image_bytes (Triton batches the two kinds of request apart).
    np.testing.assert_allclose(send(grpc, server.grpc(), good[1:], "images")["logits"], want[1], atol=1e-5, rtol=1e-5)
    for answer, (_, _, _, (status, message)) in zip(answers[2:], requests[2:]):
        assert isinstance(answer, InferenceServerException), answer
        assert answer.status() == status and answer.message().startswith(message), (answer.status(), answer.message())
        assert "\n" not in answer.message()


def test_make_spec_serves_image_bytes_only_with_the_manifests_preprocessing(tmp_path):
    from dvit_deploy.artifact.store import Artifact
    from dvit_deploy.jobs.serve.spec import ServeOptions, make_spec

    manifest = {"kind": "onnx", "variant": "tiny-deit", "config": {"img_size": 224}, "dense": False,
                "keep_ratio": 0.7, "keep_counts": [137, 96, 67], "num_patches": 196, "dynamic_batch": True,
                "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}]}
    recorded = {**DATA_CONFIG, "crop_pct": 0.9}

    def spec(**fields):
        return make_spec(Artifact.of(tmp_path / "m.onnx", {**manifest, **fields}),
                         ServeOptions(backend="onnxruntime", precision="fp32"))

    assert spec(data_config=recorded).data_config == {**DATA_CONFIG, "crop_pct": 0.9, "input_size": [3, 224, 224],
                                                      "mean": list(DATA_CONFIG["mean"]), "std": list(DATA_CONFIG["std"])}
    assert spec().data_config is None, "a config no variant can be built from: no preprocessing, no image_bytes"
    assert spec(data_config={**recorded, "input_size": [3, 256, 256]}).data_config is None, "not the model's input"


def test_model_py_imports_the_dvit_deploy_that_started_the_server(tmp_path):
    """The backend stub builds its own sys.path (PYTHONPATH is not on it): model.py puts the root that
    ``server_env`` names first, so a checkout serves its own code, not site-packages' copy."""
    import os
    import subprocess
    import sys

    from dvit_deploy.jobs.serve.server import MODEL_PY

    fake = tmp_path / "root" / "dvit_deploy" / "jobs" / "serve"
    fake.mkdir(parents=True)
    for folder in (fake, fake.parent, fake.parent.parent):
        (folder / "__init__.py").write_text("")
    (fake / "backend.py").write_text("TritonPythonModel = 'the copy named by DVIT_SERVE_PACKAGE_ROOT'\n")
    (tmp_path / "model.py").write_text(MODEL_PY + "print(TritonPythonModel)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "model.py"], cwd=tmp_path, capture_output=True, text=True,
                         env={**env, "DVIT_SERVE_PACKAGE_ROOT": str(tmp_path / "root")})
    assert out.stdout.strip() == "the copy named by DVIT_SERVE_PACKAGE_ROOT", out.stderr


def test_image_bytes_requests_name_their_keep_ratio_per_image_like_images_requests():
    """--dynamic-keep: keep_ratio counts the decoded images; requests at different ρ get different runner calls."""
    class KeepRecorder(ChannelMeans):
        def run(self, batch, keep_counts=None):
            self.batches.append((len(batch), tuple(int(c) for c in keep_counts)))
            return SimpleNamespace(logits=batch.mean(axis=(2, 3)), kept=None)

    runner = KeepRecorder()
    spec = spec_for(dynamic_keep=True, dense=False, keep_ratio=0.7, keep_range=(0.5, 0.9))
    jpeg, png = encode(photo(seed=1), "JPEG"), encode(photo(seed=2), "PNG")
    responses = RequestHandler(runner, spec).handle([
        Request(None, np.full((2, 1), 0.6, np.float32), image_bytes=as_tensor(jpeg, png)),
        Request(None, image_bytes=as_tensor(png)),  # the export's ρ
        Request(None, np.full((1, 1), 0.6, np.float32), image_bytes=as_tensor(jpeg, png)),
    ])
    assert responses[0].outputs["keep_ratio"].ravel().tolist() == pytest.approx([0.6, 0.6])
    assert responses[1].outputs["keep_ratio"].ravel().tolist() == pytest.approx([0.7])
    assert responses[2].error == "keep_ratio needs one value per image (2), got 1"
    assert sorted(runner.batches) == sorted([(2, spec.counts_for(0.6)), (1, spec.counts_for(0.7))])


def test_decode_pool_gives_the_serial_decode_bit_for_bit_and_the_first_bad_image_by_row():
    from dvit_deploy.jobs.serve.decode import DecodePool

    files = [encode(photo((320 + 16 * i, 240), seed=40 + i), fmt) for i, fmt in enumerate(["JPEG", "PNG", "WEBP"] * 2)]
    bad, empty = b"\xff\xd8\xff not really a jpeg", b""
    values = [as_tensor(*files[:3]), as_tensor(files[3]), as_tensor(files[4], bad, empty),
              np.asarray([["text"]], dtype=object), as_tensor(*files[3:])]
    pool = DecodePool(DATA_CONFIG, workers=3)
    try:
        for _ in range(2):  # the pool's threads are reused
            answers = pool.decode(values)
            for index in (0, 1, 4):
                expected = decode_images(values[index], DATA_CONFIG)
                assert answers[index].dtype == np.float32 and answers[index].flags.c_contiguous
                assert np.array_equal(answers[index], expected), "the same arrays as a serial decode"
            with pytest.raises(BadInput) as serial:
                decode_images(values[2], DATA_CONFIG)
            assert isinstance(answers[2], BadInput) and str(answers[2]) == str(serial.value)
            assert str(answers[2]).startswith("image_bytes[1] "), "row 1 fails first, not row 2"
            assert str(answers[3]) == "image_bytes[0] is text, not an encoded image's bytes"
    finally:
        pool.close()
    assert np.array_equal(DecodePool(DATA_CONFIG, workers=1).decode(values[:1])[0], decode_images(values[0], DATA_CONFIG))


def test_the_controller_counts_the_rows_of_image_bytes_requests_and_the_handler_times_its_phases():
    class Controller:  # what the handler calls on an SloController
        rho = 0.7

        def __init__(self) -> None:
            self.rows: list[int] = []
            self.observed: list[tuple[float, int]] = []

        def on_batch(self, rows: int) -> None:
            self.rows.append(rows)

        def on_batch_end(self) -> None:
            pass

        def observe(self, rho: float, rows: int, seconds: float) -> None:
            self.observed.append((rho, rows))

    class KeepRunner(ChannelMeans):
        def run(self, batch, keep_counts=None):
            return super().run(batch)

    controller = Controller()
    spec = spec_for(dynamic_keep=True, dense=False, keep_ratio=0.7, keep_range=(0.5, 0.9))
    handler = RequestHandler(KeepRunner(), spec, controller)
    jpeg = encode(photo(seed=5), "JPEG")
    fp32 = np.zeros((2, 3, 224, 224), np.float32)
    responses = handler.handle([Request(None, image_bytes=as_tensor(jpeg, jpeg, jpeg)), Request(fp32), Request(None)])
    assert [r.error is None for r in responses] == [True, True, False]
    assert controller.rows == [5], "3 encoded images + 2 tensors, before anything is decoded"
    assert controller.observed == [(0.7, 5)]
    assert handler.seconds["decode"] > 0 and handler.seconds["runner"] > 0
    handler.close()


def test_backend_times_reach_the_metrics_as_counters_at_most_every_quarter_second(monkeypatch):
    from dvit_deploy.jobs.serve import backend

    class Metric:
        def __init__(self, labels):
            self.labels, self.value = labels, 0.0

        def increment(self, value):
            assert value >= 0, "a counter only grows"
            self.value += value

    class Family:
        COUNTER, GAUGE = "counter", "gauge"

        def __init__(self, name, description, kind):
            self.name, self.metrics = name, []

        def Metric(self, labels):  # noqa: N802 - the stub's name
            self.metrics.append(Metric(labels))
            return self.metrics[-1]

    clock = [100.0]
    monkeypatch.setattr(backend.time, "monotonic", lambda: clock[0])
    times = backend.BackendTimes(SimpleNamespace(MetricFamily=Family), "m")
    assert times.ok
    phase = times._phase
    times.add(0.050, {"decode": 0.010, "runner": 0.030})  # first batch: sent at once
    clock[0] += 0.1
    times.add(0.040, {"decode": 0.010, "runner": 0.060})  # within 0.25 s: held back
    assert (phase["execute"].value, phase["runner"].value, times._batches.value) == pytest.approx((0.050, 0.030, 1))
    clock[0] += 0.2
    times.add(0.060, {"decode": 0.025, "runner": 0.100})
    assert phase["execute"].value == pytest.approx(0.150) and phase["decode"].value == pytest.approx(0.025)
    assert phase["runner"].value == pytest.approx(0.100) and times._batches.value == 3
    assert phase["decode"].labels == {"model": "m", "phase": "decode"}
    times.close()
    assert backend.BackendTimes(SimpleNamespace(), "m").ok is False, "no custom metrics: a no-op"


def test_decode_pool_decodes_a_single_image_on_the_calling_thread(monkeypatch):
    """Batch of one: no hand-off to the pool (its latency is the c = 1 path); two images: on the pool."""
    import threading

    from dvit_deploy.jobs.serve import decode as decode_module

    seen: list[str] = []
    real = decode_module.decode_one

    def recording(blob, index, data_config):
        seen.append(threading.current_thread().name)
        return real(blob, index, data_config)

    monkeypatch.setattr(decode_module, "decode_one", recording)
    single = as_tensor(encode(photo((320, 240), seed=7), "JPEG"))
    pool = decode_module.DecodePool(DATA_CONFIG, workers=2)
    try:
        answer = pool.decode([single])[0]
        assert seen == [threading.current_thread().name]
        assert np.array_equal(answer, decode_images(single, DATA_CONFIG))
        seen.clear()
        pool.decode([single, single])
        assert len(seen) == 2 and all(name.startswith("dvit-decode") for name in seen)
    finally:
        pool.close()
