"""`dvit serve`: an artifact on a real Triton Inference Server (the one nvidia-pytriton ships).

``spec`` (what is served, the Triton config), ``handler`` (requests -> runner calls, grouped by
kept counts), ``decode`` (the ``image_bytes`` input: encoded images, predict's checks and
preprocessing), ``backend`` (the Python-backend model inside tritonserver), ``tritonserver`` (the
bundled server, libpython, the stub's environment), ``server`` (start, ready, drain, clean up),
``controller`` (``--slo-ms``: the ρ that holds a p99 objective, pure logic), ``slo`` (its start-up
measurement, report and metrics in the server), ``paced`` (a simulated service time, tests only).
"""

from __future__ import annotations

from ...helpers.lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {
    "ServeSpec": "spec", "ServeOptions": "spec", "make_spec": "spec", "RequestHandler": "handler", "Request": "handler",
    "Response": "handler", "ServeSettings": "server", "ServeResult": "server", "prepare": "server",
    "run": "server", "run_serve": "server", "serve": "server", "model_repository": "server", "find_tritonserver": "tritonserver",
    "SloController": "controller", "ControllerConfig": "controller",
})
