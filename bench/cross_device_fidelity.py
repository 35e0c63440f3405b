"""Cross-device fidelity (issue 14): validate's predicted vs measured latency over cpu + opencl:0,
with a profile before and after ``hetero profile --update-calibration``, in the same run.

Run: ``.venv/bin/python bench/cross_device_fidelity.py --before profiles --after /tmp/calibrated
[--models seed-cnn,resnet18,mobilenetv2] [--placements random:1,...,random:5,auto] [--requests 30]``

``--before`` / ``--after`` are folders holding ``M.int8.json`` for each model M. For each model and
placement: one real run with the after profile's plan (random placements are the same plan under
both profiles, so both predictions are compared with that one measurement; auto gets its own run
per profile, the plans may differ), the predictions of both profiles, and the 1-minute load average
(the measurement is only meaningful on a quiet machine: the two cores are shared).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from hetero.app.validate import _simulate, validate
from hetero.cost.model import cost_model_for
from hetero.errors import HeteroError
from hetero.quant.precision import load_for_precision
from hetero.schedulers import fixed_schedule

DEVICES = ["cpu", "opencl:0"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="folder with the profiles before calibration")
    parser.add_argument("--after", required=True, help="folder with the calibrated profiles")
    parser.add_argument("--models", default="seed-cnn,resnet18,mobilenetv2")
    parser.add_argument("--placements", default="random:1,random:2,random:3,random:4,random:5,auto")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print("| model | placement | hand-offs | load | before: predicted / measured | error | after: predicted / measured | error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models.split(","):
        before, after = (os.path.join(folder, f"{model}.int8.json") for folder in (args.before, args.after))
        graph = load_for_precision(f"builtin:{model}", "int8")
        cost_before, _ = cost_model_for(graph, before, DEVICES, "int8")
        for placement in args.placements.split(","):
            load = os.getloadavg()[0]
            checked = validate(f"builtin:{model}", DEVICES, after, requests=args.requests, placement=placement)
            if placement == "auto":
                old = validate(f"builtin:{model}", DEVICES, before, requests=args.requests, placement="auto")
                predicted_before, measured_before = old.predicted_latency_s, old.measured_latency_s
            else:
                plan = fixed_schedule(graph, cost_before, dict(checked.plan.placement))
                predicted_before = _simulate(graph, cost_before, before, DEVICES, plan, "int8", args.requests, 1)[0]
                measured_before = checked.measured_latency_s
            crossings = len(checked.handoffs)
            rows = [(predicted_before, measured_before), (checked.predicted_latency_s, checked.measured_latency_s)]
            cells = " | ".join(f"{p * 1e3:.3f} / {m * 1e3:.3f} ms | {(p - m) / m:+.1%}" for p, m in rows)
            print(f"| {model} | {placement} | {crossings} | {load:.2f} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HeteroError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
