"""``hetero validate``: schedule, simulate and run the same plan for real (hetero.app.validate), and
print the per-op and per-hand-off comparison."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from hetero.app.options import add_input_shape_option, device_list, positive_int
from hetero.app.run import plan_file, open_cluster


def add_validate_parser(sub: Any) -> None:
    p = sub.add_parser("validate", help="schedule, simulate and run the same plan for real; compare predicted and measured")
    p.add_argument("model", help="an .onnx path or builtin:NAME")
    p.add_argument("--devices", required=True, help="comma-separated measured devices (they must be in the profile)")
    p.add_argument("--profile", required=True, help="the profile measured on these devices (its precision is used)")
    p.add_argument("--cluster", metavar="tcp://SCHEDULER:8786", help="a Dask cluster whose hetero workers serve the HOST/DEVICE devices in --devices")
    p.add_argument("--requests", type=positive_int, default=30, help="requests run for real and simulated")
    p.add_argument("--inflight", type=positive_int, default=1, help="requests in flight at once (1: latency; more: throughput)")
    p.add_argument("--algorithm", default="auto", help="with --placement auto: the scheduling algorithm")
    p.add_argument("--placement", default="auto", help="the plan to check: auto (the scheduler's, default), a PLAN.json "
                   "from hetero schedule, or random:SEED (each op on a random device that has a kernel for it)")
    p.add_argument("--json", action="store_true", help="print predicted_s, measured_s, latency_rel_error, per-op and "
                   "hand-off rows and their totals as JSON")
    add_input_shape_option(p)
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from hetero.app.validate import validate

    names = device_list(args.devices)
    plan_file(args.placement)  # a bad --placement is refused before a cluster is opened
    cluster = open_cluster(args.cluster, names)
    try:
        result = validate(args.model, names, args.profile, requests=args.requests, inflight=args.inflight, algorithm=args.algorithm,
                          input_shapes=args.input_shape, cluster=cluster, placement=args.placement).to_dict()
    finally:
        if cluster is not None:
            cluster.close()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"plan: {result['algorithm']}, " + ", ".join(f"{d} {sum(1 for v in result['placement'].values() if v == d)} ops" for d in names))
    print(f"latency    predicted {result['predicted_s'] * 1e3:9.3f} ms  measured {result['measured_s'] * 1e3:9.3f} ms  error {result['latency_rel_error']:+.1%}")
    print(f"throughput predicted {result['predicted_throughput_rps']:9.1f} /s  measured {result['measured_throughput_rps']:9.1f} /s  error {result['throughput_rel_error']:+.1%}")
    print_breakdown(result)
    return 0


def print_breakdown(result: dict[str, Any]) -> None:
    """validate's per-op and per-hand-off table and its totals (times in microseconds)."""
    def us(seconds: float | None) -> str:
        return "" if seconds is None or not math.isfinite(seconds) else f"{seconds * 1e6:.1f}us"

    def rel(value: float | None) -> str:
        return "" if value is None else f"{value:+.0%}"

    print(f"  {'node':<28} {'device':<14} {'predicted':>11} {'measured':>11} {'diff':>11} {'error':>6}")
    for row in result["per_op"]:
        print(f"  {row['node'][:28]:<28} {row['device']:<14} {us(row['predicted_s']):>11} {us(row['measured_s']):>11} "
              f"{us(row['error_s']):>11} {rel(row['rel_error']):>6}")
    if result["handoffs"]:
        print(f"  {'hand-off: last input ready to consumer start':<43} {'predicted':>11} {'measured':>11} {'diff':>11} {'error':>6}"
              f" {'ready before the other inputs':>30}")
        for row in result["handoffs"]:
            edge, devices = f"{row['src']}->{row['dst']}", f"{row['src_device']}->{row['dst_device']}"
            waited = row.get("waited_s")
            print(f"  {edge[:28]:<28} {devices[:14]:<14} {us(row['predicted_s']):>11} {us(row['measured_s']):>11} "
                  f"{us(row['error_s']):>11} {rel(row['rel_error']):>6} {us(waited) if waited else '':>30}")
    t = result["totals"]
    print(f"  {'ops, summed':<43} {us(t['op_predicted_s']):>11} {us(t['op_measured_s']):>11} {us(t['op_error_s']):>11}")
    handoffs = f"hand-offs ({t['handoffs']}), summed"
    print(f"  {handoffs:<43} {us(t['handoff_predicted_s']):>11} {us(t['handoff_measured_s']):>11} {us(t['handoff_error_s']):>11}")
    print(f"  {'makespan vs measured median latency':<43} {us(t['makespan_predicted_s']):>11} {us(t['makespan_measured_s']):>11} "
          f"{us(t['makespan_error_s']):>11}")
    print(f"  {'rest (host I/O, waits, overlap)':<43} {'':>11} {'':>11} {us(t['rest_error_s']):>11}")

