"""Defaults shown in the CLI's help, kept here (import-free) so the help needs no heavy import."""

DEFAULT_OPSET = 18  # TensorRT 10.3 (JetPack 6) parses opsets up to 20
PREDICT_BATCH = 8  # images per inference call in predict/eval
VALIDATE_SAMPLES = 8
VALIDATE_BATCH = 8
CV_WARN_PERCENT = 2.5  # trtexec warns above this coefficient of variation
