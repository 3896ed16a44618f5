"""Defaults shown in the CLI's help, kept here (import-free) so the help needs no heavy import."""

DEFAULT_OPSET = 18  # TensorRT 10.3 (JetPack 6) parses opsets up to 20
DEFAULT_WORKSPACE_MB = 4096  # TensorRT workspace memory pool limit for `dvit build`
DEFAULT_OPT_LEVEL = 3  # TensorRT's default builder_optimization_level
MAX_BATCH = 4096  # the largest batch: an export's dynamic batch dimension, an engine's profile
PREDICT_BATCH = 8  # images per inference call in predict/eval
VALIDATE_SAMPLES = 8
VALIDATE_BATCH = 8
CV_WARN_PERCENT = 2.5  # trtexec warns above this coefficient of variation
# `dvit profile`: the time per batch size and the alternating rounds (profile.measure.ProfileSettings)
PROFILE_WARMUP_S = 1.0
PROFILE_DURATION_S = 3.0
PROFILE_ROUNDS = 5
# build options (engines): engines.build_plan.BuildOptions, and the CLI's help for `dvit build`
BUILD_PRECISION = "fp32"
BUILD_HARDWARE_COMPAT = "none"
BUILD_MIN_BATCH = 1  # the image input's profile: min, opt = min(max(min, 32), max), max
BUILD_OPT_BATCH = 32
BUILD_MAX_BATCH = 64
BUILD_KEEP_RANGE = (0.5, 0.9)  # the ρ range a --dynamic-keep engine serves
FP16_CHECK_SAMPLES = 4  # images the fp16 graph is compared with the fp32 one on (ONNX Runtime)
# profile options (profile.measure.ProfileOptions / ProfileSettings; the CLI's `dvit profile` flags)
PROFILE_BATCH = 64  # images per timed call when --batch is not given
PROFILE_MIN_ITERATIONS = 10  # timed calls per artifact and batch, whatever --duration says
PROFILE_DEVICE = "cpu"
PROFILE_GRAPH_OPTIMIZATION = "all"  # ONNX Runtime graph optimization level
# quantize options (`dvit quantize`, quantize.core.QuantizeOptions)
QUANTIZE_METHOD = "percentile"  # activation ranges: entropy, percentile or minmax
QUANTIZE_PERCENTILE = 99.999
QUANTIZE_CALIB_SAMPLES = 64
QUANTIZE_CALIB_BATCH = 8
QUANTIZE_CHECK_SAMPLES = 32  # inputs of the int8-vs-PyTorch check
QUANTIZE_TARGET = "cpu"  # where the int8 graph will run: cpu or tensorrt
EXPORT_CHECK_SAMPLES = 4  # seeded inputs of the post-export ORT-vs-PyTorch check (`dvit export`)
