"""The worker side: ``hetero worker`` joins a Dask cluster and serves this host's devices.

The worker process opens its devices once (:func:`serve`) and keeps them in :data:`SERVED`. A
client reaches them through one :class:`DeviceHost` actor per (client, worker): the actor holds
the ops the client sent (weights included; each op once, so weights cross the network once per
placement change), the device buffers of the tensors it made, and runs a whole batch of ops (a
partition of one request) per call. Every op runs the device's own kernel with ``timed_run_native``, so
outputs are the same bits as on that device locally and timings are by the device's clock.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from hetero.backends.base import Buffer, Device
from hetero.errors import DeviceError
from hetero.ir.graph import Op
from hetero.remote.wire import pack, unpack, unpack_op

log = logging.getLogger(__name__)

#: the devices this worker process serves, by their local name (cpu, opencl:0); set by serve()
SERVED: dict[str, Device] = {}
_GONE = frozenset({"closing", "closing_gracefully", "closed", "failed", "stopping", "stopped"})  # a worker done for
_SERVED_LOCK = threading.Lock()  # one op at a time per process: actors of several clients share devices


@dataclass(frozen=True)
class Step:
    """One op of a batch: the op's key, its activation inputs' handles and its outputs' handles."""

    op_key: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def served_devices() -> list[dict[str, object]] | None:
    """The DeviceInfo dicts of the devices this process serves (None: not a hetero worker)."""
    if not SERVED:
        return None
    return [device.info.to_dict() for device in SERVED.values()]


class DeviceHost:
    """A Dask actor on a hetero worker: one client's ops, tensors and batches on this host's devices."""

    def __init__(self) -> None:
        if not SERVED:
            raise DeviceError("this Dask worker serves no hetero devices; start it with 'hetero worker SCHEDULER --name HOST'")
        self.ops: dict[str, Op] = {}
        self.buffers: dict[int, tuple[str, Buffer]] = {}  # handle -> (device, buffer)

    def devices(self) -> list[dict[str, object]]:
        return served_devices() or []

    def supports(self, device: str, packed: Sequence[dict[str, Any]]) -> list[str | None]:
        """Per op (packed, see ``hetero.remote.wire``): None if the device can run it, else why not."""
        target = self._device(device)
        ops = [unpack_op(fields) for fields in packed]
        return [None if target.supports(op) else target.why_not(op) for op in ops]

    def execute(self, device: str, new_ops: Mapping[str, dict[str, Any]], uploads: Mapping[int, np.ndarray],
                batch: bytes) -> tuple[dict[int, np.ndarray], bytes]:
        """Store ``new_ops``, upload ``uploads``, run the ``steps`` of ``batch`` (``wire.pack`` of
        (steps, wanted, free)) in order, and return the arrays of the ``wanted`` handles and each
        step's device-clock seconds (packed, a dict by op key); ``free`` handles are dropped last."""
        steps: Sequence[Step]
        wanted: Sequence[int]
        free: Sequence[int]
        steps, wanted, free = unpack(batch)
        target = self._device(device)
        self.ops.update({key: unpack_op(fields) for key, fields in new_ops.items()})
        seconds: dict[str, float] = {}
        with _SERVED_LOCK:
            for handle, array in uploads.items():
                self.buffers[handle] = (device, target.upload(array))
            for step in steps:
                op = self.ops.get(step.op_key)
                if op is None:
                    raise DeviceError(f"device {device}: op {step.op_key} was never sent to this worker (it restarted?); rerun")
                inputs = [self._buffer(device, target, h) for h in step.inputs]
                outputs, seconds[step.op_key] = target.timed_run_native(op, inputs)
                for handle, buffer in zip(step.outputs, outputs):
                    self.buffers[handle] = (device, buffer)
            result = {h: np.ascontiguousarray(target.download(self._buffer(device, target, h))) for h in wanted}
            target.synchronize()
        for handle in free:
            self.buffers.pop(handle, None)
        return result, pack(seconds)

    def release(self) -> int:
        """Drop every op and tensor this client left here; how many tensors were dropped."""
        count = len(self.buffers)
        self.buffers.clear()
        self.ops.clear()
        return count

    def _device(self, name: str) -> Device:
        device = SERVED.get(name)
        if device is None:
            raise DeviceError(f"this worker serves no device '{name}' (it serves {', '.join(SERVED)})")
        return device

    def _buffer(self, device: str, target: Device, handle: int) -> Buffer:
        held = self.buffers.get(handle)
        if held is None:
            raise DeviceError(f"device {device}: tensor handle {handle} is not held on this worker (it restarted?); rerun")
        owner, buffer = held
        if owner != device:  # a tensor made on another device of this host: through the host
            buffer = target.upload(SERVED[owner].download(buffer))
        return buffer


def _host_port(listen: str | None) -> tuple[str | None, int | None]:
    if listen is None:
        return None, None
    host, sep, port = listen.removeprefix("tcp://").rpartition(":")
    if not sep or not port.isdigit():
        raise DeviceError(f"--listen {listen!r}: write HOST:PORT, e.g. 0.0.0.0:9000")
    return host or None, int(port)


def open_served(names: Sequence[str] | None) -> dict[str, Device]:
    """Open the devices to serve: ``names``, or every usable device here but reference."""
    from hetero.backends.registry import discover, open_device

    if names is None:
        names = [d.name for d in discover()[0] if d.kind != "reference"] or ["reference"]
    return {name: open_device(name) for name in names}


def serve(scheduler: str, name: str, devices: Sequence[str] | None = None, nthreads: int = 1,
          ready: threading.Event | None = None, listen: str | None = None, contact: str | None = None) -> None:
    """Join the Dask cluster at ``scheduler`` as worker ``name`` serving ``devices``; run until
    SIGINT or SIGTERM, then leave the cluster cleanly. ``listen`` (HOST:PORT) is where the worker
    listens, ``contact`` the address others reach it at (a NAT, a proxy; default: where it listens)."""
    from distributed import Worker

    if "/" in name or not name.strip():
        raise DeviceError(f"--name {name!r}: a host name must be non-empty and hold no '/' (devices are named HOST/DEVICE)")
    if not logging.getLogger("hetero").isEnabledFor(logging.INFO):  # -v shows Dask's own log too
        logging.getLogger("distributed").setLevel(logging.WARNING)
    opened = open_served(devices)
    SERVED.clear()
    SERVED.update(opened)
    log.info("serving %s as %s", ", ".join(opened), ", ".join(f"{name}/{d}" for d in opened))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            where = _host_port(listen)
            worker = Worker(scheduler, name=name, nthreads=nthreads, dashboard=False, host=where[0], port=where[1],
                            contact_address=contact)
            await asyncio.wait_for(worker.start(), timeout=30)
        except (OSError, TimeoutError, asyncio.TimeoutError) as err:
            raise DeviceError(f"cannot join the Dask scheduler at {scheduler} ({err}); start one with 'dask scheduler'") from None
        except Exception as err:  # e.g. the scheduler refuses a second worker of this name
            raise DeviceError(f"the Dask scheduler at {scheduler} refused worker '{name}' ({type(err).__name__}: {err}); "
                              "is a worker of that name running already? give another --name") from None
        print(f"hetero worker {name}: serving {', '.join(f'{name}/{d}' for d in opened)} at {worker.address}", flush=True)
        if ready is not None:
            ready.set()
        try:
            while not stop.is_set() and worker.status.name not in _GONE:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                except (TimeoutError, asyncio.TimeoutError):
                    pass
        finally:
            await worker.close(reason="hetero worker stopped")
            log.info("left the cluster")

    try:
        asyncio.run(run())
    finally:
        for device in opened.values():
            device.close()
        SERVED.clear()
