"""The client side: devices on other hosts, named ``HOST/DEVICE``, behind the Device protocol.

:class:`Cluster` is a Dask client on ``--cluster tcp://SCHEDULER:8786``; it finds the hetero
workers (``hetero worker ... --name HOST``) and keeps one :class:`~hetero.remote.server.DeviceHost`
actor per host. A :class:`RemoteDevice` is lazy: ``run`` only queues the op, and the queue goes to
the worker in one actor call when a tensor is read back (``download``) or sent (``upload``). So a
partition of a request runs in one call, each input tensor crosses once (upload) and each
boundary output once (download).
An op is sent with its weights the first time it runs on that host (per placement change).

``timed_run`` gives the op's device-clock seconds from the worker: measured now the first time
the op runs there (one call), else those of its last run, one batch behind (a policy watching for
drift sees it a request late). A worker that dies or disconnects makes every call fail with a
DeviceError: the runtime's device failure. A worker that comes back under the same name is found
again (:meth:`RemoteDevice.reachable`), and its ops are sent again.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from hetero.backends.base import Buffer, Device, DeviceInfo
from hetero.errors import DeviceError, InputError
from hetero.ir.graph import Op
from hetero.remote.server import DeviceHost, Step, served_devices
from hetero.remote.wire import pack, pack_op, unpack

log = logging.getLogger(__name__)

REMOTE_KIND_PREFIX = "remote-"
CONNECT_TIMEOUT_S = 10.0
WORKER_CONNECT_TIMEOUT_S = 3.0
CALL_TIMEOUT_S = 60.0  # one batch (a partition of a request, or a worker's first compile)


class WorkerLostError(DeviceError):
    """A host's worker is gone (died, disconnected, timed out, or none of that name is in the cluster)."""


def _worker_devices(dask_worker: Any = None) -> tuple[str, list[dict[str, object]] | None]:
    """Run on every worker by ``Client.run``: its name and the hetero devices it serves."""
    return str(dask_worker.name), served_devices()


class Cluster:
    """A Dask client on a hetero cluster: its hosts, their devices, one actor per host."""

    def __init__(self, address: str, call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        from distributed import Client

        if not logging.getLogger("hetero").isEnabledFor(logging.INFO):
            logging.getLogger("distributed").setLevel(logging.ERROR)
        self.address = address
        self.call_timeout_s = call_timeout_s
        import dask

        # a dead worker's port refuses at once: fail the call after a few seconds, not Dask's 30 s of retries
        dask.config.set({"distributed.comm.timeouts.connect": f"{WORKER_CONNECT_TIMEOUT_S}s"})
        try:  # direct_to_workers: actor calls go straight to the worker, not through the scheduler
            self.client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False, direct_to_workers=True)
        except (OSError, TimeoutError) as err:
            raise InputError(f"--cluster {address}: cannot reach a Dask scheduler there ({err}); start one with "
                             "'dask scheduler' and workers with 'hetero worker SCHEDULER --name HOST'") from None
        self._lock = threading.RLock()
        self._actors: dict[str, tuple[Any, Any, int]] = {}  # host -> (future, actor, generation)
        self._generation = itertools.count(1)
        self._handles = itertools.count(1)

    # --- hosts and devices ----------------------------------------------------------------------

    def hosts(self) -> dict[str, tuple[str, list[DeviceInfo]]]:
        """host name -> (worker address, the devices it serves, named HOST/DEVICE)."""
        try:
            answers = self.client.run(_worker_devices, on_error="return")
        except Exception as err:  # the scheduler went away
            raise DeviceError(f"--cluster {self.address}: cannot ask the workers for their devices ({err})") from None
        hosts: dict[str, tuple[str, list[DeviceInfo]]] = {}
        for address, answer in sorted(answers.items()):
            if isinstance(answer, BaseException) or answer[1] is None:
                continue  # a plain dask worker (a sweep's), or one that is going away
            name, infos = answer
            hosts[name] = (address, [remote_info(name, address, DeviceInfo(**info)) for info in infos])  # type: ignore[arg-type]
        return hosts

    def devices(self) -> list[DeviceInfo]:
        return [info for _, infos in self.hosts().values() for info in infos]

    def new_handle(self) -> int:
        return next(self._handles)

    # --- the actor per host ---------------------------------------------------------------------

    def actor(self, host: str) -> tuple[Any, int]:
        """The host's actor and its generation (a new one after the worker came back)."""
        with self._lock:
            held = self._actors.get(host)
            if held is not None:
                return held[1], held[2]
            found = self.hosts().get(host)
            if found is None:
                raise WorkerLostError(f"host {host}: no hetero worker of that name is in the cluster at {self.address} "
                                  f"(start one there with 'hetero worker {self.address} --name {host}')")
            address = found[0]
            try:
                future = self.client.submit(DeviceHost, workers=[address], allow_other_workers=False, actor=True, pure=False)
                with self.client.as_current():  # the Actor proxy binds to the client current when it is made
                    actor = future.result(timeout=CONNECT_TIMEOUT_S)
            except Exception as err:
                raise WorkerLostError(f"host {host}: cannot start its device actor on {address} ({type(err).__name__}: {err})") from None
            generation = next(self._generation)
            self._actors[host] = (future, actor, generation)
            log.info("host %s: device actor on %s (generation %d)", host, address, generation)
            return actor, generation

    def forget(self, host: str, generation: int) -> None:
        """Drop the host's actor after a failed call (the worker died or went away)."""
        with self._lock:
            held = self._actors.get(host)
            if held is not None and held[2] == generation:
                del self._actors[host]
                try:
                    held[0].release()
                except Exception as err:  # the client may be closing too
                    log.debug("releasing %s's actor: %s", host, err)

    def call(self, host: str, method: str, *args: Any) -> Any:
        """One actor call; any failure (worker dead, disconnected, timed out) is a DeviceError.
        The worker runs it on its event loop (``separate_thread=False``), not in its actor thread:
        one thread hop less per call (0.3-0.6 ms of a 1-2 ms loopback call on this 2-core host)."""
        actor, generation = self.actor(host)
        try:
            return getattr(actor, method)(*args, separate_thread=False).result(timeout=self.call_timeout_s)
        except DeviceError:
            raise
        except Exception as err:
            self.forget(host, generation)
            raise WorkerLostError(f"host {host}: the worker failed or went away during {method} ({type(err).__name__}: {err})") from None

    def close(self) -> None:
        with self._lock:
            for host, (future, actor, _) in list(self._actors.items()):
                try:
                    actor.release().result(timeout=5)
                    future.release()
                except Exception as err:
                    log.debug("closing %s's actor: %s", host, err)
            self._actors.clear()
        self.client.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remote_info(host: str, address: str, info: DeviceInfo) -> DeviceInfo:
    """A worker's device as this client names it: HOST/DEVICE, described with its host (not the
    worker's address, which changes when it restarts: a profile of HOST/DEVICE stays valid). Its
    kind is ``remote-KIND``: nothing here measures it as a local device (this host's power, say)."""
    return replace(info, name=f"{host}/{info.name}", kind=f"{REMOTE_KIND_PREFIX}{info.kind}",
                   description=f"{info.description} on {host}")


def split_name(name: str) -> tuple[str, str]:
    host, sep, local = name.partition("/")
    if not sep or not host or not local:
        raise InputError(f"device '{name}': a device on another host is named HOST/DEVICE, e.g. edge/cpu")
    return host, local


class RemoteBuffer:
    """A tensor held (or queued) on a remote device: a handle into the host's actor."""

    __slots__ = ("handle", "__weakref__")

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __repr__(self) -> str:
        return f"RemoteBuffer({self.handle})"


class RemoteDevice(Device):
    """A device served by a hetero worker, as ``HOST/DEVICE``; see the module's docstring."""

    def __init__(self, info: DeviceInfo, cluster: Cluster) -> None:
        super().__init__(info)
        self.cluster = cluster
        self.host, self.local = split_name(info.name)
        self._lock = threading.RLock()
        self._reasons: dict[int, tuple[Op, str | None]] = {}  # id(op) -> (op, why not or None)
        self._keys: dict[int, tuple[Op, str]] = {}  # id(op) -> (op, key on the wire)
        self._sent: set[str] = set()
        self._generation = 0
        self._uploads: dict[int, np.ndarray] = {}
        self._steps: list[Step] = []
        self._free: list[int] = []
        self._seconds: dict[str, float] = {}
        self._checked_s = 0.0
        self._lost = False  # the worker went away: reachable() watches for one of its name to come back
        self.calls = 0  # actor calls made (batches), for tests and the README's figures

    # --- capability -----------------------------------------------------------------------------

    def learn(self, ops: Sequence[Op]) -> None:
        """Ask the worker, in one call, which of ``ops`` its device can run (supports caches it)."""
        unknown = [op for op in ops if id(op) not in self._reasons]
        if unknown:
            try:
                reasons = self.cluster.call(self.host, "supports", self.local, [pack_op(op) for op in unknown])
            except WorkerLostError:
                self._lost = True
                raise
            for op, reason in zip(unknown, reasons):
                self._reasons[id(op)] = (op, reason)

    def supports(self, op: Op) -> bool:
        self.learn([op])
        return self._reasons[id(op)][1] is None

    def why_not(self, op: Op) -> str:
        self.learn([op])
        return self._reasons[id(op)][1] or f"device {self.name} can run {op.name}"

    # --- memory and launches (queued) -------------------------------------------------------------

    def _key(self, op: Op) -> str:
        held = self._keys.get(id(op))
        if held is None:
            held = self._keys[id(op)] = (op, f"{op.name}#{self.cluster.new_handle()}")
        return held[1]

    def _buffer(self) -> RemoteBuffer:
        buffer = RemoteBuffer(self.cluster.new_handle())
        weakref.finalize(buffer, self._release, buffer.handle)
        return buffer

    def _release(self, handle: int) -> None:
        with self._lock:  # a queued upload still goes (a queued step may read it); the worker drops it after
            self._free.append(handle)

    def upload(self, array: np.ndarray) -> Buffer:
        """Send the array now (with the ops queued before it): one call per tensor that crosses."""
        buffer = self._buffer()
        with self._lock:
            self._uploads[buffer.handle] = np.ascontiguousarray(array)
            self._flush([])
        return buffer

    def run(self, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        if self._fail_countdown is not None:
            if self._fail_countdown == 0:
                raise DeviceError(f"device {self.name} failed while running {op.name} (injected fault)")
            self._fail_countdown -= 1
        if not self.supports(op):
            raise DeviceError(self.why_not(op))
        for buffer in inputs:
            if not isinstance(buffer, RemoteBuffer):
                raise DeviceError(f"device {self.name}: node {op.name} got an input that is not on this device; upload it first")
        outputs = [self._buffer() for _ in op.outputs]
        with self._lock:
            self._steps.append(Step(self._key(op), tuple(b.handle for b in inputs), tuple(b.handle for b in outputs)))
        return outputs

    def timed_run(self, op: Op, inputs: Sequence[Buffer]) -> tuple[list[Buffer], float]:
        outputs = self.run(op, inputs)
        key = self._key(op)
        if key not in self._seconds:
            self._flush([])
        return outputs, self._seconds[key]

    def last_seconds(self, op: Op) -> float | None:
        """The device-clock seconds of ``op``'s last run on the worker (None before its first batch)."""
        return self._seconds.get(self._key(op))

    def download(self, buffer: Buffer) -> np.ndarray:
        if not isinstance(buffer, RemoteBuffer):
            raise DeviceError(f"device {self.name}: cannot download {type(buffer).__name__}, which is not on this device")
        return self._flush([buffer.handle])[buffer.handle]

    def synchronize(self) -> None:
        """Nothing to wait for: uploads are on the device when ``upload`` returns, and queued ops run
        when a tensor is next read back or uploaded. So a partition runs in one call, also when the
        caller synchronises after each op (a timed graph run: op times are the device's clock)."""

    def _flush(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Send what is queued (new ops, uploads, steps) in one actor call; the ``wanted`` arrays."""
        with self._lock:
            uploads, steps, free = self._uploads, self._steps, self._free
            self._uploads, self._steps, self._free = {}, [], []
            try:
                _, generation = self.cluster.actor(self.host)
                if generation != self._generation:  # a new actor (the worker came back): it holds nothing yet
                    self._sent.clear()
                    self._generation = generation
                ops = {key: op for op, key in self._keys.values()}
                new = {step.op_key: pack_op(ops[step.op_key]) for step in steps if step.op_key not in self._sent}
                self.calls += 1
                arrays, packed = self.cluster.call(self.host, "execute", self.local, new, uploads, pack((steps, wanted, free)))
                seconds = unpack(packed)
            except DeviceError as err:
                if isinstance(err, WorkerLostError):
                    self._lost = True
                raise type(err)(f"device {self.name}: {err}") from None
            self._sent.update(new)
            self._seconds.update(seconds)
            return arrays

    # --- failure and rejoin ---------------------------------------------------------------------

    def reachable(self, every_s: float = 0.5) -> bool:
        """Whether the worker this device lost is back: one of its name serves it in the cluster now
        (asked at most every ``every_s``). False for a device that failed otherwise (a kernel error,
        an injected fault): its worker never went away, so it has not recovered."""
        if not self._lost or self._fail_countdown is not None:
            return False
        now = time.monotonic()
        if now - self._checked_s < every_s:
            return False
        self._checked_s = now
        try:
            hosts = self.cluster.hosts()
        except DeviceError:
            return False
        found = hosts.get(self.host)
        back = found is not None and any(info.name == self.name for info in found[1])
        if back:
            self._lost = False
        return back

    def close(self) -> None:
        with self._lock:
            self._uploads.clear()
            self._steps.clear()
        super().close()


def open_devices(names: Sequence[str], cluster: Cluster | None, **local_options: Any) -> dict[str, Device]:
    """Open devices by name: HOST/DEVICE on the cluster's workers, the others here (options: theirs)."""
    from hetero.backends.registry import open_device

    remote = [n for n in names if "/" in n]
    if remote and cluster is None:
        raise InputError(f"device '{remote[0]}' is on another host: give --cluster tcp://SCHEDULER:8786")
    infos: dict[str, DeviceInfo] = {}
    if remote:
        infos = {info.name: info for info in cluster.devices()}  # type: ignore[union-attr]
    devices: dict[str, Device] = {}
    for name in names:
        if "/" not in name:
            devices[name] = open_device(name, **(local_options.get(name) or {}))
            continue
        split_name(name)
        info = infos.get(name)
        if info is None:
            served = ", ".join(infos) or "none"
            raise DeviceError(f"device '{name}' is not served in the cluster at {cluster.address} "  # type: ignore[union-attr]
                              f"(remote devices: {served}); start 'hetero worker {cluster.address} --name {name.split('/')[0]}' there")  # type: ignore[union-attr]
        devices[name] = RemoteDevice(info, cluster)  # type: ignore[arg-type]
    return devices
