"""hetero sweep: many simulations on Dask into a resumable RESULTS.csv; --plot draws the Pareto front."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from hetero.app.options import positive_int
from hetero.errors import InputError

log = logging.getLogger(__name__)


def add_sweep_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run a design-space sweep (a grid or random draws over a scenario) on Dask; "
                                     "--plot draws the Pareto front of its results")
    p.add_argument("sweep", nargs="?", help="a sweep YAML file (see examples/sweeps/)")
    p.add_argument("-o", "--output", required=True, help="RESULTS.csv to append to (a re-run computes only missing rows); "
                                                         "with --plot: the image (.png, .svg or .pdf)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes of the local Dask cluster (default: the machine's cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="use an existing Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--batch", type=positive_int, default=None, metavar="N",
                   help="simulations per Dask task (default: the sweep file's batch, else about 4 tasks per worker)")
    p.add_argument("--max-events", type=positive_int, default=None, metavar="N",
                   help="per simulation, as hetero simulate --max-events (a point over it gets an error row)")
    p.add_argument("--plot", metavar="RESULTS", help="draw RESULTS.csv's points and Pareto front into -o")
    p.add_argument("--x", default="cost", help="with --plot: x axis column (default: cost = cost_usd, else energy)")
    p.add_argument("--y", default="latency_p99_s", help="with --plot: y axis column (default: latency_p99_s)")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="with --plot: only rows with this value (repeatable), e.g. workload.rate=400/s")
    p.add_argument("--json", action="store_true", help="print the summary (or the front) as JSON")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.plot:
        if args.sweep or args.workers or args.scheduler or args.batch:
            raise InputError("--plot RESULTS.csv draws existing results; drop the sweep file, --workers, --scheduler and --batch")
        return _plot(args)
    if args.where:
        raise InputError("--where selects rows for --plot; give --plot RESULTS.csv too")
    if not args.sweep:
        raise InputError("hetero sweep needs SWEEP.yaml -o RESULTS.csv (or --plot RESULTS.csv -o pareto.png)")
    if args.workers is not None and args.scheduler:
        raise InputError("give --workers (a local cluster) or --scheduler ADDRESS (an existing one), not both")
    from hetero.io import check_target
    from hetero.sweep import dask_client, load_sweep, run_sweep

    check_target(args.output, "-o")
    sweep = load_sweep(args.sweep)  # every point checked before a cluster starts
    try:
        with dask_client(args.workers, args.scheduler) as client, _ProgressBar(not args.json) as bar:
            summary = run_sweep(sweep, args.output, client, batch=args.batch, max_events=args.max_events,
                                on_start=bar.start, on_progress=bar.update)
    except KeyboardInterrupt:  # the cluster is closed by now; the rows written so far stay
        print(f"hetero: error: interrupted; {args.output} keeps the runs that finished: "
              "run the same command again to compute the rest", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"results": args.output, "points": len(sweep.points), **vars(summary)}))
        return 0
    print(f"sweep {sweep.name}: {len(sweep.points)} points, {summary.runs} runs: {summary.already} already in "
          f"{args.output}, {summary.computed} computed ({summary.failed} failed) on {summary.workers} workers "
          f"in {summary.wall_s:.1f} s")
    if summary.lost_batches:
        print(f"{summary.lost_batches} batches were lost with their workers; run the same command again to retry them")
    print(f"wrote {args.output}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from hetero.app.plots import image_format
    from hetero.io import write_atomic
    from hetero.sweep.pareto import front_image, pareto_front, select_rows
    from hetero.sweep.results import read_rows

    kind = image_format(args.output, "-o")
    front = pareto_front(select_rows(read_rows(args.plot), args.where), args.x, args.y)
    write_atomic(args.output, front_image(front, kind), "-o")
    if args.json:
        print(json.dumps({"x": front.x, "y": front.y, "points": len(front.points), "left_out": front.left_out,
                          "front": [{"point": p.point, **dict(p.values), front.x: p.x, front.y: p.y, "seeds": p.seeds}
                                    for p in front.front]}))
        return 0
    print(f"Pareto front of {args.plot}: {len(front.front)} of {len(front.points)} points "
          f"({front.x} vs {front.y}, mean over seeds; {front.left_out} rows with an error or no value left out)")
    width = max([len(p.describe()) for p in front.front] + [6])
    print(f"{'point':>5}  {'values':<{width}}  {front.x:>16}  {front.y:>16}")
    for p in front.front:
        print(f"{p.point:>5}  {p.describe():<{width}}  {p.x:>16.6g}  {p.y:>16.6g}")
    print(f"wrote {args.output}")
    return 0


class _ProgressBar:
    """Runs done, failed and the time left, on stderr (a no-op when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> "_ProgressBar":
        return self

    def start(self, total: int) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("done, {task.fields[failed]} failed"),
                            TextColumn("left"), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.bar.start()
        self.task = self.bar.add_task("sweep", total=total, failed=0)

    def update(self, done: int, failed: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, failed=failed)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
