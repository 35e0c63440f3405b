"""The OpenCL backend (pyopencl): every registered op type on one OpenCL device.

Kernels come from kernels/*.cl (each prefixed with kernels/common.cl), built once per context
and build options (an in-process cache in front of pyopencl's on-disk cache). The options ask
for correctly rounded float32 division where the device offers it, and the sources turn off
FP_CONTRACT, so the float32 steps of requantization round exactly as the numpy reference.
Buffers are ``pyopencl.array.Array``s that stay on the device between ops; constants are
uploaded once per op. ``timed_run`` sums OpenCL profiling intervals of the kernels an op enqueued. The
``kernel_style`` option picks the kernel variants: "auto" (the CPU-style wide work items of
kernels/qcpu.cl on CL_DEVICE_TYPE_CPU devices, the local-memory tiles elsewhere), "cpu" or "gpu";
PoCL on a host CPU with AVX-512 VNNI also gets the int8 products of kernels/qvnni.cl. The
``throttle`` option (>= 1) makes the device really slower: after each op the host sleeps
(throttle - 1) x the op's kernel time, and ``timed_run`` reports throttle x kernel time.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from hetero.backends.base import Buffer, DeviceInfo, Probe
from hetero.backends.kernels.common import KernelDevice, kernel_source, source_digest
from hetero.backends.kernels.ops import CONDITIONS as FLOAT_CONDITIONS
from hetero.backends.kernels.ops import KERNELS as FLOAT_KERNELS
from hetero.backends.kernels.qops import CONDITIONS as INT_CONDITIONS
from hetero.backends.kernels.qops import KERNELS as INT_KERNELS
from hetero.backends.kernels.tensor import CONDITIONS as MOVE_CONDITIONS
from hetero.backends.kernels.tensor import KERNELS as MOVE_KERNELS
from hetero.backends.kernels.transformer import CONDITIONS as TRANSFORMER_CONDITIONS
from hetero.backends.kernels.transformer import KERNELS as TRANSFORMER_KERNELS
from hetero.backends.discovery import opencl_address, opencl_probe
from hetero.backends.opencl_probe import list_devices
from hetero.errors import DeviceError
from hetero.ir.graph import Op

log = logging.getLogger(__name__)

#: op type -> kernel and op type -> condition, shared with the CUDA backend
KERNELS = {**FLOAT_KERNELS, **MOVE_KERNELS, **INT_KERNELS, **TRANSFORMER_KERNELS}
CONDITIONS = {**FLOAT_CONDITIONS, **MOVE_CONDITIONS, **INT_CONDITIONS, **TRANSFORMER_CONDITIONS}
BASE_OPTIONS = ("-cl-std=CL1.2",)  # also what opencl_probe.py probes with
EXACT_DIVIDE = "-cl-fp32-correctly-rounded-divide-sqrt"
EXACT_DIVISION_OPS = ("QuantizeLinear", "QLinearConcat", "QLinearAveragePool", "QLinearMul", "QLinearSoftmax")
KERNEL_STYLES = ("auto", "cpu", "gpu")
VNNI_OPTION = "-DHETERO_VNNI"  # builds the AVX-512 VNNI kernels of kernels/qvnni.cl
POCL_PLATFORM = "Portable Computing Language"


def host_has_vnni() -> bool:
    """The host CPU has AVX-512 VNNI (the avx512_vnni flag of /proc/cpuinfo; False where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "avx512_vnni" in line.split()
    except OSError as err:
        log.debug("cannot read /proc/cpuinfo: %s", err)
    return False


def is_pocl_cpu(device: Any) -> bool:
    """The device is PoCL's CPU driver: its kernels run on this host, compiled by PoCL's clang."""
    import pyopencl as cl

    return POCL_PLATFORM in device.platform.name and bool(device.type & cl.device_type.CPU)


def probe() -> Probe:
    """The OpenCL devices that build and run a kernel (opencl:N) and the failing ones with their
    reasons, from the child-process probe of this process (``discovery.opencl_probe``)."""
    found = opencl_probe()
    return found.usable, found.absent


def cl_device(info: DeviceInfo) -> Any:
    """The pyopencl device that discovery probed and named ``info.name`` (opencl:N)."""
    import pyopencl as cl

    address = opencl_address(info)
    try:
        listed, _ = list_devices(cl)
    except cl.Error as err:
        raise DeviceError(f"device {info.name} is no longer listed by OpenCL ({err}); run hetero devices") from None
    match = [(platform, device) for p, platform, d, device in listed if (p, d) == address]
    if not match:
        raise DeviceError(f"device {info.name} is no longer listed by OpenCL (no device {address[1]} on platform "
                          f"{address[0]}); run hetero devices")
    platform, device = match[0]
    if f"{platform.name.strip()} {platform.version.strip()}" != info.platform or device.name.strip() not in info.description:
        raise DeviceError(f"device {info.name}: OpenCL lists {device.name.strip()} on {platform.name.strip()} where "
                          f"discovery found {info.description}; run hetero devices")
    return device


class OpenCLDevice(KernelDevice):
    """One OpenCL device: an in-order profiling queue, cached programs, device-resident arrays."""

    kernels = KERNELS  # type: ignore[assignment]  # kernels take the KernelDevice subclass
    conditions = CONDITIONS

    def __init__(self, info: DeviceInfo, throttle: float = 1.0, int8_gemm: str = "packed",
                 kernel_style: str = "auto") -> None:
        import pyopencl as cl
        import pyopencl.array  # noqa: F401  (registers cl.array)
        import pyopencl.tools

        super().__init__(info)
        self.throttle = throttle  # checked by Device, int8_gemm by KernelDevice
        self.int8_gemm = int8_gemm
        self._cl = cl
        self.device = cl_device(info)
        if kernel_style not in KERNEL_STYLES:
            raise DeviceError(f"device {info.name}: kernel_style must be 'auto', 'cpu' or 'gpu', got {kernel_style!r}")
        # "auto": the CPU-style variants on CL_DEVICE_TYPE_CPU (PoCL), the tiled ones elsewhere
        self.cpu_style = kernel_style == "cpu" or (kernel_style == "auto" and bool(self.device.type & cl.device_type.CPU))
        #: PoCL runs CPU kernels on this host: AVX-512 VNNI products where the host CPU has them
        self.vnni_capable = is_pocl_cpu(self.device) and host_has_vnni()
        self.vnni = self.vnni_capable
        self._vnni_built: bool | None = None
        try:
            self.context = cl.Context([self.device])
            self.queue = cl.CommandQueue(self.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
        except cl.Error as err:
            raise DeviceError(f"device {info.name} cannot open an OpenCL context ({err}); check its driver") from None
        self.pool = cl.tools.MemoryPool(cl.tools.ImmediateAllocator(self.queue))
        fp_config = int(self.device.single_fp_config)
        self.exact_divide = bool(fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT)
        self.options = BASE_OPTIONS + ((EXACT_DIVIDE,) if self.exact_divide else ())
        self._programs: dict[tuple[str, str], Any] = {}  # (source digest, options) -> built program
        self._kernels: dict[tuple[str, str], Any] = {}
        self._events: list[Any] = []
        self._dummy = self.upload(np.zeros(4, np.int32))

    # --- capability ---------------------------------------------------------------------------

    def supports(self, op: Op) -> bool:
        """As Device.supports; ops whose exact result divides in float32 also need exact division."""
        if op.type in EXACT_DIVISION_OPS and not self.exact_divide:
            return False
        return super().supports(op)

    # --- programs and launches ------------------------------------------------------------------

    def program(self, file: str) -> Any:
        """kernels/<file>.cl built for this device's context (cached here and on disk by pyopencl)."""
        source = kernel_source(file)
        options = self.options + (VNNI_OPTION,) if file == "qvnni" and self.vnni else self.options
        key = (source_digest(source), " ".join(options))
        if key not in self._programs:
            started = time.perf_counter()
            try:
                self._programs[key] = self._cl.Program(self.context, source).build(options=list(options))
            except self._cl.RuntimeError as err:
                lines = [line for line in str(err).splitlines() if "error" in line.lower()] or ["build failed"]
                raise DeviceError(f"device {self.name} cannot build kernels/{file}.cl: {lines[0].strip()}") from None
            log.debug("built kernels/%s.cl for %s in %.2fs", file, self.name, time.perf_counter() - started)
        return self._programs[key]

    def vnni_ready(self) -> bool:
        """As KernelDevice.vnni_ready; the first call builds kernels/qvnni.cl, and a build that
        fails (a PoCL whose LLVM lacks the VNNI built-in) turns the VNNI kernels off, logged."""
        if not (self.cpu_style and self.vnni):
            return False
        if self._vnni_built is None:
            try:
                self.program("qvnni")
                self._vnni_built = True
            except DeviceError as err:
                log.warning("%s; using the float32 CPU kernels instead of VNNI", err)
                self._vnni_built = False
        return self._vnni_built

    def _kernel(self, file: str, name: str, args: Sequence[Any]) -> Any:
        """The cached kernel object, its scalar argument types declared once (pyopencl then packs
        scalars directly: an undeclared numpy scalar costs tens of microseconds per launch)."""
        key = (file, name)
        if key not in self._kernels:
            kernel = self._cl.Kernel(self.program(file), name)
            kernel.set_scalar_arg_dtypes([a.dtype if isinstance(a, np.generic) else None for a in args])
            self._kernels[key] = kernel
        return self._kernels[key]

    def launch(self, file: str, name: str, global_size: Sequence[int], local_size: Sequence[int], *args: Any) -> None:
        kernel = self._kernel(file, name, args)
        cl_args = [a.data if isinstance(a, self._cl.array.Array) else a for a in args]
        self._events.append(kernel(self.queue, tuple(global_size), tuple(local_size), *cl_args))

    # --- memory --------------------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> Buffer:
        return self._cl.array.to_device(self.queue, np.ascontiguousarray(array), allocator=self.pool)

    def download(self, buffer: Buffer) -> np.ndarray:
        return buffer.get(self.queue)

    def empty(self, shape: Sequence[int], dtype: Any) -> Buffer:
        return self._cl.array.empty(self.queue, tuple(int(d) for d in shape), np.dtype(dtype), allocator=self.pool)

    def view(self, buffer: Buffer, shape: Sequence[int]) -> Buffer:
        return buffer.reshape(tuple(int(d) for d in shape))

    @property
    def dummy(self) -> Buffer:
        return self._dummy

    # --- running and timing --------------------------------------------------------------------------

    def run(self, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        self._events = []
        outputs = super().run(op, inputs)
        if self.throttle > 1.0 and self._events:
            time.sleep((self.throttle - 1.0) * self.kernel_seconds())
        return outputs

    def timed_run(self, op: Op, inputs: Sequence[Buffer]) -> tuple[list[Buffer], float]:
        """Outputs and the op's kernel time by OpenCL event profiling (times throttle)."""
        outputs = self.run(op, inputs)
        return outputs, self.throttle * self.kernel_seconds()

    def kernel_seconds(self) -> float:
        """Device time of the kernels the last op enqueued (waits for them), by event profiling."""
        if not self._events:
            return 0.0
        self._cl.wait_for_events(self._events)
        return sum(ev.profile.end - ev.profile.start for ev in self._events) * 1e-9

    def synchronize(self) -> None:
        self.queue.finish()

    def close(self) -> None:
        self.synchronize()
        super().close()
        self._kernels.clear()
        self._programs.clear()
        self._events = []
