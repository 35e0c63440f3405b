"""The runtime: partitioned execution of a graph on real devices, driven by a Policy.

One worker thread per device takes (request, op) tasks from its queue. An op is queued on the
device its request's plan names once every producer of its inputs has finished; a tensor crosses
devices only where the placement crosses a boundary (download on the producer's worker, upload on
the consumer's, through the host). Ops launch with ``timed_run_native``: a device may keep the
tensors it hands from op to op in its own layout (the cpu device: channels-last, as its
compiled plan does) and converts only on download. Several requests are in flight at once (``inflight``), so the
devices work as a pipeline. Each request follows the plan the policy routed it to when it
started, so a re-plan never changes a request midway: weights for a new plan are prepared on
its devices lazily, by the first op that runs there.

The same Policy objects as the simulator decide: ``observe`` gets every op's device-clock time,
``rebalance`` is asked between requests, and when a device raises, ``device_failed`` gives the
plan the request is retried on; a failed device that says it is back (``reachable()``: a remote
device whose worker rejoined) is reported between requests with ``device_recovered``. Every op runs a kernel that is bit-exact with the numpy
reference, so the outputs are identical for every placement.

A live update (``serve(..., update=LiveUpdate(new_graph, after_request=K))``) queues, when request K
starts, a load of the new version's weights on every device's worker, between the ops of the
requests in flight. Each request takes the version current when it starts and runs every op of
that version, so no request mixes old weights on one device with new on another; the switch comes
when the last device has loaded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from hetero.backends.base import Buffer, Device, on_host_cores
from hetero.cost.protocol import HOST
from hetero.errors import DeviceError, HeteroError, InputError
from hetero.exec.live_update import LiveUpdate, check_same_structure, load_weights
from hetero.exec.records import Load, Request, RunReport
from hetero.exec.segments import Segment, plan_segments, prepare_segment, segment_graph
from hetero.ir.graph import Graph, Op, check_feeds
from hetero.policy import Policy, PolicyContext
from hetero.schedule import Schedule
from hetero.trace import COMPUTE_LANE, TraceEvent

log = logging.getLogger(__name__)


class Runtime:
    """Serve requests through a partitioned graph on real devices under a policy."""

    def __init__(self, graph: Graph, devices: Mapping[str, Device], policy: Policy, context: PolicyContext,
                 max_attempts: int = 3, initial: Schedule | None = None, segments: bool = True) -> None:
        self.graph = graph
        self.initial = initial
        self.devices = dict(devices)
        self.policy = policy
        self.context = context
        self.max_attempts = max_attempts
        self.order = list(graph.ops_in_order())
        self.ops = {op.name: op for op in self.order}
        self.producer = {t: op.name for op in self.order for t in op.outputs}
        self.consumers: dict[str, list[str]] = {op.name: sorted(graph.successors(op.name)) for op in self.order}
        self.readers: dict[str, list[str]] = {
            t: [c for c in self.consumers[op.name] if t in self.ops[c].activation_inputs] for op in self.order for t in op.outputs
        }
        self.output_names = [spec.name for spec in graph.outputs]
        #: per op: how many ops it reads from (a request's countdown starts from a copy); ops reading none
        self._pending = {op.name: len({self.producer[t] for t in op.activation_inputs if t in self.producer}) for op in self.order}
        self._roots = [name for name, count in self._pending.items() if count == 0]
        self._policy_lock = threading.Lock()
        self._queues: dict[str, queue.Queue] = {}
        self._clock0 = time.perf_counter()
        self._versions: list[dict[str, Op]] = [self.ops]
        self._current_version = 0
        #: devices that run a same-device segment as one compiled plan (hetero.exec.segments)
        self._segmented = {name for name, d in self.devices.items() if segments and hasattr(d, "run_segment")}
        self._sharing_for: frozenset[str] | None = None  # the devices of the plan _share_cores last told about
        self._segment_cache: dict[int, tuple[Schedule, int, dict[str, Segment]]] = {}  # by plan object
        self._placement_segments: dict[tuple, dict[str, Segment]] = {}  # by placement and version
        self._segment_lock = threading.Lock()

    # --- the policy, behind one lock (workers call it concurrently) ---------------------------------

    def _now(self) -> float:
        return time.perf_counter() - self._clock0

    def _policy(self, method: str, *args: Any) -> Any:
        with self._policy_lock:
            return getattr(self.policy, method)(*args)

    # --- serving ----------------------------------------------------------------------------------

    def serve(self, requests: Sequence[Mapping[str, np.ndarray]], inflight: int = 1,
              faults: Mapping[int, Sequence[str]] | None = None, update: LiveUpdate | None = None) -> RunReport:
        """Run every request (feeds by input name) with at most ``inflight`` at a time.

        ``faults``: request index -> devices that break (``Device.inject_failure``) just before
        that request starts; they are repaired when the run ends. ``update``: load a new version's
        weights while serving and switch to it between requests (see the module's docstring).
        """
        feeds = [check_feeds(self.graph, r) for r in requests]
        self._versions, self._current_version = [self.ops], 0
        self._segment_cache.clear()  # another serve's version 1 may be another model: its segments go
        self._placement_segments = {key: found for key, found in self._placement_segments.items() if key[1] == 0}
        self._update: dict[str, Any] | None = None
        if update is not None:
            if not 0 <= update.after_request < len(feeds):
                raise InputError(f"live update after request {update.after_request}: the run has {len(feeds)} requests, "
                                 f"numbered 0 to {len(feeds) - 1}; pick one of those")
            check_same_structure(self.graph, update.graph, new_label=update.label)
            self._versions.append({op.name: op for op in update.graph.ops_in_order()})
            self._update = {"after_request": update.after_request, "started_s": None, "switch_s": None,
                            "loaded_bytes": {}, "load_s": {}, "first_request": None}
            self._loads_pending = len(self.devices)
        faults = dict(faults or {})
        unknown = sorted({d for names in faults.values() for d in names} - set(self.devices))
        if unknown:
            raise DeviceError(f"a fault names device {unknown[0]}, which this runtime has no worker for "
                              f"(devices: {', '.join(self.devices)})")
        broken: list[str] = []
        self._clock0 = time.perf_counter()
        self._events: list[TraceEvent] = []
        self._op_seconds: dict[str, list[float]] = {}
        self._op_wall: dict[str, list[float]] = {}
        self._results: list[dict[str, np.ndarray] | None] = [None] * len(feeds)
        self._model_versions: list[int | None] = [None] * len(feeds)
        self._latencies: list[float | None] = [None] * len(feeds)
        self._slots = threading.Semaphore(max(1, inflight))
        self._done = threading.Event()
        self._remaining = len(feeds)
        self._counter_lock = threading.Lock()
        self._retries = 0
        self._failed_devices: list[str] = []
        self._down: set[str] = set()
        self._fatal: HeteroError | None = None
        plans = self._policy("start", self.context, self.initial)
        self._placements = [dict(plans[0].placement)]
        self._rebalances = 0
        workers = []
        for name in self.devices:
            self._queues[name] = queue.Queue()
            worker = threading.Thread(target=self._work, args=(name,), name=f"hetero-{name}", daemon=True)
            worker.start()
            workers.append(worker)
        started = time.perf_counter()
        try:
            for index, request_feeds in enumerate(feeds):
                self._slots.acquire()
                for name in faults.get(index, ()):
                    log.info("fault: %s breaks before request %d", name, index)
                    self.devices[name].inject_failure(after_ops=0)
                    broken.append(name)
                if self._fatal is not None:
                    self._abandon(index)
                    continue
                self._check_recovered()
                new = self._policy("rebalance", self._now())
                if new is not None:
                    self._adopt(new)
                if update is not None and index == update.after_request:
                    self._start_update()
                self._submit(index, request_feeds, attempt=1, version=self._current_version)
            if feeds:
                self._done.wait()
        finally:
            for name in self.devices:
                self._queues[name].put(None)
            for worker in workers:
                worker.join()
            for name in broken:
                self.devices[name].repair()
            self._share_cores(None)  # helpers spin again after this run
        wall = time.perf_counter() - started
        if self._fatal is not None and not any(self._latencies):
            raise self._fatal
        if self._update is not None and self._update["switch_s"] is None:
            log.warning("live update: every request had started before the new weights were loaded on every device; "
                        "none ran on the new version (update earlier, or serve more requests)")
        return RunReport(
            outputs=self._results,
            latencies_s=self._latencies,
            wall_s=wall,
            rebalances=self._rebalances,
            retries=self._retries,
            failed_requests=sum(1 for r in self._results if r is None),
            failed_devices=tuple(self._failed_devices),
            placements=tuple(self._placements),
            events=tuple(sorted(self._events, key=lambda e: e.start_s)),
            op_seconds=self._op_seconds,
            op_wall_s=self._op_wall,
            model_versions=self._model_versions,
            update=self._update,
        )

    def _check_recovered(self) -> None:
        """Tell the policy about failed devices that say they are back (``reachable()``: a remote
        device whose worker rejoined the cluster); a failover policy plans them in again."""
        with self._counter_lock:
            down = sorted(self._down)
        for name in down:
            reachable = getattr(self.devices[name], "reachable", None)
            if reachable is None or not reachable():
                continue
            log.info("%s is reachable again", name)
            with self._counter_lock:
                self._down.discard(name)
            new = self._policy("device_recovered", name, self._now())
            if new is not None:
                self._adopt(new)

    def _adopt(self, plan: Schedule) -> None:
        if dict(plan.placement) != self._placements[-1]:
            self._rebalances += 1
            self._placements.append(dict(plan.placement))
            log.info("re-partitioned: %s", _moves(self._placements[-2], self._placements[-1]))

    def _start_update(self) -> None:
        """Queue the new version's weight load on every device's worker (it runs between their ops)."""
        assert self._update is not None
        self._update["started_s"] = self._now()
        log.info("live update: loading the new weights on %s", ", ".join(self.devices))
        for name in self.devices:
            self._queues[name].put(Load(len(self._versions) - 1))

    def _load(self, device_name: str, device: Device, task: Load) -> None:
        """Prepare the version's ops the current placement puts here; the last device to finish switches."""
        assert self._update is not None
        ops = self._versions[task.version]
        mine = [ops[n] for n, d in self._placements[-1].items() if d == device_name]
        start = self._now()
        loaded = load_weights(device, mine)
        if device_name in self._segmented:  # compile its segments of the new version (for inputs from the host)
            for segment in self._segments_of(self._placements[-1], task.version).values():
                if segment.device == device_name:
                    prepare_segment(device, segment)
        end = self._now()
        self._record(TraceEvent(f"load weights v{task.version}", "transfer", device_name, "link from host", start, end,
                                {"bytes": loaded, "ops": len(mine)}))
        with self._counter_lock:
            self._update["loaded_bytes"][device_name] = loaded
            self._update["load_s"][device_name] = end - start
            self._loads_pending -= 1
            last = self._loads_pending == 0
        if last:
            self._update["switch_s"] = end
            self._current_version = task.version
            log.info("live update: every device holds version %d; requests starting from now run on it", task.version)

    def _submit(self, index: int, feeds: Mapping[str, np.ndarray], attempt: int, version: int = 0) -> None:
        plan = self._policy("route", index, self._now())
        missing = [n for n, d in plan.placement.items() if d not in self.devices]
        if missing:
            raise DeviceError(f"the plan places {missing[0]} on {plan.placement[missing[0]]}, which this runtime has no worker for")
        self._share_cores(plan)
        pending = dict(self._pending)
        request = Request(index, feeds, plan, attempt, self._now(), pending, version=version)
        if version and self._update is not None and self._update["first_request"] is None:
            self._update["first_request"] = index
        for name, array in feeds.items():
            request.host_copies[name] = (array, HOST, 0.0)
        ops = self._versions[version]
        for name in self._roots:
            self._queues[plan.placement[name]].put((request, ops[name]))

    def _share_cores(self, plan: Any) -> None:
        """Tell devices whose helper threads spin (the cpu device) whether ``plan`` also runs ops
        on another device computing on the host's cores (an OpenCL CPU device: PoCL)."""
        used = frozenset(plan.placement.values()) if plan is not None else frozenset()
        if used == self._sharing_for:
            return
        self._sharing_for = used
        on_cores = {name for name in used if name in self.devices and on_host_cores(self.devices[name].info.to_dict())}
        for name, device in self.devices.items():
            hook = getattr(device, "share_cores", None)
            if hook is not None:
                hook(on_host_cores(device.info.to_dict()) and bool(on_cores - {name}))

    # --- one device's worker ---------------------------------------------------------------------

    def _work(self, device_name: str) -> None:
        device = self.devices[device_name]
        tasks = self._queues[device_name]
        while True:
            item = tasks.get()
            if item is None:
                return
            if isinstance(item, Load):
                self._load(device_name, device, item)
                continue
            local = [item]
            while local:  # ops made ready for this same device run here at once, without a queue hop
                request, op = local.pop()
                if request.failed:
                    continue
                try:
                    segment = self._segments(request).get(op.name) if device_name in self._segmented else None
                    ready = None if segment is None else self._run_segment(device_name, device, request, segment)
                    if ready is None:
                        ready = self._run_op(device_name, device, request, op)
                except Exception as err:  # a device fault of any kind fails this request, which is retried
                    self._fail(request, device_name, err)
                    continue
                ops = self._versions[request.version]
                for consumer in ready:
                    target = request.plan.placement[consumer]
                    if target == device_name:
                        local.append((request, ops[consumer]))
                    else:
                        self._queues[target].put((request, ops[consumer]))

    def _input_buffer(self, device_name: str, device: Device, request: Request, tensor: str) -> Buffer:
        with request.lock:
            resident = request.device_copies.get((tensor, device_name))
            host = request.host_copies.get(tensor)
        if resident is not None:
            return resident
        if host is None:
            raise DeviceError(f"tensor {tensor} is on another device and was not copied to the host")
        array, source, download_s = host
        start = self._now()
        buffer = device.upload(array)
        device.synchronize()
        end = self._now()
        self._record(TraceEvent(tensor, "transfer", device_name, f"link from {source}", start, end, {"bytes": int(array.nbytes), "from": source, "to": device_name}))
        self._policy("observe_transfer", source, device_name, int(array.nbytes), download_s + end - start, end)
        with request.lock:
            request.device_copies[(tensor, device_name)] = buffer
        return buffer

    def _segments(self, request: Request) -> dict[str, Segment]:
        """The same-device segments of the request's plan and model version, by root op (built once
        per plan and version; their graphs are what the devices compile)."""
        entry = self._segment_cache.get(id(request.plan))
        if entry is None or entry[0] is not request.plan or entry[1] != request.version:
            entry = self._segment_cache[id(request.plan)] = (request.plan, request.version,
                                                             self._segments_of(request.plan.placement, request.version))
        return entry[2]

    def _segments_of(self, placement: Mapping[str, str], version: int) -> dict[str, Segment]:
        key = (tuple(placement[op.name] for op in self.order), version)
        found = self._placement_segments.get(key)
        if found is None:
            with self._segment_lock:
                found = self._placement_segments.get(key)
                if found is None:
                    ops = self._versions[version]
                    found = plan_segments([ops[op.name] for op in self.order], placement, self.producer, self.readers,
                                          self.output_names, self._segmented)
                    for root, segment in found.items():
                        segment.graph = segment_graph(segment, f"{self.graph.name}:{segment.device}:{root}")
                    self._placement_segments[key] = found
        return found

    def _run_segment(self, device_name: str, device: Device, request: Request, segment: Segment) -> list[str] | None:
        """Run a segment of a request as one plan on its device; the consumers outside it made
        ready, or None when the device declines (a fault injected: the ops then run one by one)."""
        inputs = {t: self._input_buffer(device_name, device, request, t) for t in segment.inputs}
        result = device.run_segment(segment.graph, inputs)
        if result is None:
            return None
        outputs, spans = result
        clock0 = self._clock0
        observed = []
        with self._counter_lock:
            for op, begin, finish in spans:
                start, end = begin - clock0, finish - clock0
                self._events.append(TraceEvent(op.name, "compute", device_name, COMPUTE_LANE, start, end,
                                               {"request": request.index, "device_s": finish - begin, "segment": segment.ops[0].name}))
                self._op_seconds.setdefault(op.name, []).append(finish - begin)
                self._op_wall.setdefault(op.name, []).append(finish - begin)
                observed.append((op.name, finish - begin, end))
        with self._policy_lock:
            for name, seconds, end in observed:
                self.policy.observe(name, device_name, seconds, end)
        for tensor in segment.outputs:
            self._publish(device_name, device, request, tensor, outputs[tensor])
        return self._made_ready(request, segment.ops, segment.members)

    def _run_op(self, device_name: str, device: Device, request: Request, op: Op) -> list[str]:
        """Run one op of a request; return the consumers it made ready."""
        inputs = [self._input_buffer(device_name, device, request, t) for t in op.activation_inputs]
        start = self._now()
        outputs, seconds = device.timed_run_native(op, inputs)  # buffers stay in the device's layout until downloaded
        end = self._now()
        self._record(TraceEvent(op.name, "compute", device_name, COMPUTE_LANE, start, end, {"request": request.index, "device_s": seconds}))
        self._policy("observe", op.name, device_name, seconds, end)
        with self._counter_lock:
            self._op_seconds.setdefault(op.name, []).append(seconds)
            self._op_wall.setdefault(op.name, []).append(end - start)
        for tensor, buffer in zip(op.outputs, outputs):
            self._publish(device_name, device, request, tensor, buffer)
        return self._made_ready(request, [op], {op.name})

    def _publish(self, device_name: str, device: Device, request: Request, tensor: str, buffer: Buffer) -> None:
        """Keep an op's output on its device; copy it to the host when another device or the
        request's result reads it."""
        remote = any(request.plan.placement[c] != device_name for c in self.readers[tensor])
        with request.lock:
            request.device_copies[(tensor, device_name)] = buffer
        if remote or tensor in self.output_names:
            down_start = self._now()
            array = device.download(buffer)
            down_end = self._now()
            if tensor in self.output_names:
                self._policy("observe_transfer", device_name, HOST, int(array.nbytes), down_end - down_start, down_end)
            with request.lock:
                request.host_copies[tensor] = (array, device_name, down_end - down_start)
                if tensor in self.output_names:
                    request.outputs[tensor] = array

    def _made_ready(self, request: Request, done: Sequence[Op], members: set[str]) -> list[str]:
        """Count ``done``'s ops off their consumers outside ``members``; the consumers now ready.
        Completes the request once every output is on the host."""
        ready = []
        with request.lock:
            for op in done:
                for consumer in self.consumers[op.name]:
                    if consumer in members:
                        continue
                    request.pending[consumer] -= 1
                    if request.pending[consumer] == 0:
                        ready.append(consumer)
            complete = len(request.outputs) == len(self.output_names) and not request.failed
        if complete:
            self._complete(request)
        return ready

    # --- completion, failure, retry ----------------------------------------------------------------

    def _record(self, event: TraceEvent) -> None:
        with self._counter_lock:
            self._events.append(event)

    def _complete(self, request: Request) -> None:
        latency = self._now() - request.start_s
        self._results[request.index] = {name: request.outputs[name] for name in self.output_names}
        self._model_versions[request.index] = request.version
        self._latencies[request.index] = latency
        self._policy("finished", request.index, latency, self._now())
        self._finish_one()

    def _finish_one(self) -> None:
        self._slots.release()
        with self._counter_lock:
            self._remaining -= 1
            if self._remaining == 0:
                self._done.set()

    def _abandon(self, index: int) -> None:
        self._policy("finished", index, None, self._now())
        self._finish_one()

    def _fail(self, request: Request, device_name: str, err: Exception) -> None:
        with request.lock:
            if request.failed:
                return
            request.failed = True
        log.warning("request %d failed on %s: %s", request.index, device_name, err)
        with self._counter_lock:
            first_failure = device_name not in self._down
            self._down.add(device_name)
            if device_name not in self._failed_devices:
                self._failed_devices.append(device_name)
        try:
            if first_failure:
                new = self._policy("device_failed", device_name, self._now())
                if new is not None:
                    self._adopt(new)
        except HeteroError as fatal:
            self._fatal = DeviceError(f"no device left to run on after {', '.join(self._failed_devices)} failed: {fatal}")
        retry_plan_ok = self._fatal is None and request.attempt < self.max_attempts
        if retry_plan_ok:
            with self._counter_lock:
                self._retries += 1
            try:
                self._submit(request.index, request.feeds, request.attempt + 1, version=request.version)
                return
            except HeteroError as err2:
                log.warning("request %d cannot be retried: %s", request.index, err2)
        self._policy("finished", request.index, None, self._now())
        self._finish_one()


def _moves(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    moved = [f"{node}: {before.get(node)} -> {device}" for node, device in after.items() if before.get(node) != device]
    return f"{len(moved)} ops moved ({'; '.join(moved[:4])}{'; ...' if len(moved) > 4 else ''})"
