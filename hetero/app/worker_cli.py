"""hetero worker: join a Dask cluster and serve this host's devices as HOST/DEVICE."""

from __future__ import annotations

import argparse
from typing import Any

from hetero.app.options import device_list, positive_int


def add_worker_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="join a Dask cluster and serve this host's devices to hetero as HOST/DEVICE")
    p.add_argument("scheduler", help="the Dask scheduler's address, e.g. tcp://10.0.0.1:8786 (start one with 'dask scheduler')")
    p.add_argument("--name", required=True, help="this host's name: its devices are named NAME/cpu, NAME/opencl:0, ...")
    p.add_argument("--devices", help="comma-separated local devices to serve (default: every usable device but reference)")
    p.add_argument("--threads", type=positive_int, default=1, help="Dask task threads (hetero's device calls use one actor thread)")
    p.add_argument("--listen", metavar="HOST:PORT", help="where the worker listens (default: a free port on the interface "
                   "that reaches the scheduler)")
    p.add_argument("--contact", metavar="tcp://HOST:PORT", help="the address clients reach this worker at, when it differs "
                   "from --listen (NAT, port forward, a proxy)")
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from hetero.remote.server import serve

    names = device_list(args.devices) if args.devices is not None else None
    serve(args.scheduler, args.name, names, nthreads=args.threads, listen=args.listen, contact=args.contact)
    return 0
