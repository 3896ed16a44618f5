#!/usr/bin/env python
"""Where int8 time goes: ONNX Runtime's per-node profile of DeiT-S/0.7 int8 against fp32, per op type.

Exports DeiT-S/0.7 (seeded weights; cached in ``benchmarks/.artifacts``), quantizes it with the recipe
``dvit quantize --for cpu`` picks on this CPU class (``--recipe`` overrides; the file is cached too),
runs both through ONNX Runtime's profiler (CPU EP, all graph optimisations, so the op types are those of
the optimised graph: QDQ pairs fused into QLinear*/MatMulInteger* kernels where ORT can) and prints the
mean ms per run and the share of each op type, grouped into int8 kernels, Q/DQ conversions and float
ops, with what each group costs against the fp32 graph.

    python benchmarks/profile_int8_ops.py --batch 64 --runs 5 --json benchmarks/results-int8-ops.json
    python benchmarks/profile_int8_ops.py --batch 8 --runs 2          # quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from bench_common import load_snapshot  # noqa: E402

# Op types that run int8 arithmetic (ORT's fused Q/DQ kernels and the ONNX integer ops).
INT8_OPS = {"QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "QGemm", "QLinearConv", "ConvInteger",
            "QAttention", "QLinearAdd", "QLinearMul", "QLinearSoftmax", "QLinearGlobalAveragePool",
            "DynamicQuantizeMatMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat", "QLinearAveragePool"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def group_of(op: str) -> str:
    return "int8 kernels" if op in INT8_OPS else "Q/DQ conversions" if op in QDQ_OPS else "float ops"


def shares(ops: dict[str, float]) -> dict[str, dict[str, float]]:
    total = sum(ops.values()) or 1.0
    return {op: {"ms": round(ms, 3), "share": round(ms / total, 4)} for op, ms in ops.items()}


def grouped(ops: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for op, ms in ops.items():
        out[group_of(op)] = out.get(group_of(op), 0.0) + ms
    return {k: round(v, 3) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    from bench_cpu import ensure_export  # benchmarks/bench_cpu.py: the export cache
    from bench_limits import ensure_int8  # benchmarks/bench_limits.py: the int8 cache
    from bench_split import op_time_by_type  # benchmarks/bench_split.py: ORT profile per op type

    from dvit_deploy.helpers.cpu import cpu_info
    from dvit_deploy.helpers.fileio import write_json_atomic
    from dvit_deploy.jobs.quantize import select_recipe

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="deit-s")
    p.add_argument("--ratio", type=float, default=0.7)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--runs", type=int, default=3, help="profiled runs per graph (after one warm-up)")
    p.add_argument("--recipe", default=None, help="int8 recipe [what --for cpu picks on this CPU]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=HERE / ".artifacts")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (args.workdir / ".gitignore").exists():
        (args.workdir / ".gitignore").write_text("*\n")
    cpu = cpu_info()
    recipe = args.recipe or select_recipe("cpu").recipe.name
    before = load_snapshot()
    fp32 = ensure_export(args.workdir, args.model, args.ratio, args.seed)
    int8 = ensure_int8(fp32, recipe)
    profiles = {"fp32": op_time_by_type(fp32, args.batch, args.runs), "int8": op_time_by_type(int8, args.batch, args.runs)}
    after = load_snapshot()

    totals = {k: sum(v.values()) for k, v in profiles.items()}
    print(f"{args.model}/{args.ratio} batch {args.batch}, ONNX Runtime node time per run (ms), {cpu.summary()}; "
          f"int8 recipe {recipe}; load {before['load_average']} → {after['load_average']}"
          f"{' (LOADED: ratios only)' if before['loaded'] or after['loaded'] else ''}")
    print(f"node time: fp32 {totals['fp32']:.1f} ms, int8 {totals['int8']:.1f} ms "
          f"(int8 {totals['fp32'] / max(totals['int8'], 1e-9):.2f}× faster in node time)")
    groups = {k: grouped(v) for k, v in profiles.items()}
    for name in ("int8 kernels", "Q/DQ conversions", "float ops"):
        ms8 = groups["int8"].get(name, 0.0)
        print(f"  {name:<18} int8 graph {ms8:8.1f} ms ({ms8 / max(totals['int8'], 1e-9):5.1%})"
              f"   fp32 graph {groups['fp32'].get(name, 0.0):8.1f} ms")
    print(f"{'op type':<26}{'group':<18}{'int8 ms':>9}{'share':>8}{'fp32 ms':>9}{'share':>8}")
    int8_shares, fp32_shares = shares(profiles["int8"]), shares(profiles["fp32"])
    for op in sorted(set(profiles["int8"]) | set(profiles["fp32"]),
                     key=lambda o: -max(profiles["int8"].get(o, 0.0), profiles["fp32"].get(o, 0.0))):
        a, b = int8_shares.get(op, {"ms": 0.0, "share": 0.0}), fp32_shares.get(op, {"ms": 0.0, "share": 0.0})
        print(f"{op:<26}{group_of(op):<18}{a['ms']:>9.2f}{a['share']:>8.1%}{b['ms']:>9.2f}{b['share']:>8.1%}")
    if args.json is not None:
        write_json_atomic(args.json, {
            "schema": "dvit-deploy/profile-int8-ops/1", "model": args.model, "keep_ratio": args.ratio,
            "batch": args.batch, "runs": args.runs, "recipe": recipe, "cpu": cpu.to_dict(),
            "load_before": before, "load_after": after, "node_ms_total": totals, "groups_ms": groups,
            "int8_by_op": int8_shares, "fp32_by_op": fp32_shares,
        })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
