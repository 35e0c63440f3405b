"""The CUDA backend (cupy): the same kernels/*.cl sources as OpenCL, compiled with NVRTC.

Each kernel file is compiled as kernels/cuda_prelude.h + kernels/common.cl + the file (the
prelude maps OpenCL C onto CUDA C++), once per device and cached. The op kernels are the
OpenCL backend's (hetero.backends.kernels.ops / opencl_qops); int8 products run on packed
bytes with __dp4a, or through cuBLAS's int8 GEMM (``gemmEx``, CUDA_R_8I in, CUDA_R_32I out)
when the shape suits it. ``timed_run`` times an op with CUDA events on the device's stream.
cupy is imported only when a CudaDevice is created: importing hetero never needs it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from hetero.backends.base import AbsentBackend, Buffer, DeviceInfo, Probe
from hetero.backends.opencl import CONDITIONS, KERNELS
from hetero.backends.kernels.common import KernelDevice, kernel_source
from hetero.errors import DeviceError
from hetero.ir.graph import Op
from hetero.resources import data_dir

log = logging.getLogger(__name__)

NVRTC_OPTIONS = ("--std=c++14",)
#: cuBLAS enums (cublas_api.h / library_types.h), used when cupy does not name them
CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I, CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_GEMM_DEFAULT = 3, 10, 72, 0, 1, -1
#: below this many multiply-adds the dp4a kernel beats cuBLAS plus the separate epilogue
CUBLAS_MIN_MACS = 1 << 22


def probe() -> Probe:
    """Every GPU the CUDA runtime lists (cuda:N), or why there is none (cupy imported only here)."""
    try:
        import cupy
    except ImportError:
        return (), (AbsentBackend("cuda", "cupy is not installed; pip install 'hetero[cuda]' on a machine with an NVIDIA GPU"),)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as err:
        return (), (AbsentBackend("cuda", f"no usable NVIDIA GPU: {err}"),)
    found = []
    for index in range(count):
        props = cupy.cuda.runtime.getDeviceProperties(index)
        found.append(DeviceInfo(
            name=f"cuda:{index}",
            kind="cuda",
            description=f"{props['name'].decode()} (compute capability {props['major']}.{props['minor']})",
            vendor="NVIDIA",
            compute_units=int(props["multiProcessorCount"]),
            memory_bytes=int(props["totalGlobalMem"]),
        ))
    if not found:
        return (), (AbsentBackend("cuda", "the CUDA runtime reports no GPU"),)
    return tuple(found), ()


def cuda_source(file: str) -> str:
    """The CUDA translation unit of kernels/<file>.cl: prelude, common.cl, the file."""
    prelude = data_dir("kernels") / "cuda_prelude.h"
    return f'#line 1 "{prelude.name}"\n{prelude.read_text(encoding="utf-8")}\n{kernel_source(file)}'


class CudaDevice(KernelDevice):
    """One NVIDIA GPU through cupy: NVRTC-compiled kernels, a private stream, cuBLAS int8 GEMM."""

    kernels = KERNELS  # type: ignore[assignment]  # kernels take the KernelDevice subclass
    conditions = CONDITIONS

    def __init__(self, info: DeviceInfo, throttle: float = 1.0, int8_gemm: str = "packed", cublas: bool = True) -> None:
        try:
            import cupy
        except ImportError:
            raise DeviceError(f"device {info.name} needs cupy; pip install 'hetero[cuda]'") from None
        super().__init__(info)
        self.throttle = throttle
        self.int8_gemm = int8_gemm
        self.cp = cupy
        self.cublas = bool(cublas)
        self.device = cupy.cuda.Device(int(info.name.split(":", 1)[1]))
        with self.device:
            self.stream = cupy.cuda.Stream()  # blocking: ordered with the legacy default stream too
            self._dummy = cupy.zeros(4, np.int32)
        self._modules: dict[str, Any] = {}
        self._functions: dict[tuple[str, str], Any] = {}

    # --- modules and launches ------------------------------------------------------------------

    def module(self, file: str) -> Any:
        """kernels/<file>.cl compiled by NVRTC for this device (cupy also caches it on disk)."""
        if file not in self._modules:
            started = time.perf_counter()
            try:
                with self.device:
                    module = self.cp.RawModule(code=cuda_source(file), options=NVRTC_OPTIONS)
                    module.compile()
            except self.cp.cuda.compiler.CompileException as err:
                first = (str(err).strip().splitlines() or ["compilation failed"])[0]
                raise DeviceError(f"device {self.name} cannot compile kernels/{file}.cl: {first}") from None
            self._modules[file] = module
            log.debug("compiled kernels/%s.cl for %s in %.2fs", file, self.name, time.perf_counter() - started)
        return self._modules[file]

    def launch(self, file: str, name: str, global_size: Sequence[int], local_size: Sequence[int], *args: Any) -> None:
        key = (file, name)
        if key not in self._functions:
            self._functions[key] = self.module(file).get_function(name)
        grid = tuple(g // b for g, b in zip(global_size, local_size)) + (1,) * (3 - len(global_size))
        block = tuple(local_size) + (1,) * (3 - len(local_size))
        with self.device, self.stream:
            self._functions[key](grid, block, args)

    # --- memory ----------------------------------------------------------------------------------------

    def upload(self, array: np.ndarray) -> Buffer:
        with self.device, self.stream:
            return self.cp.asarray(np.ascontiguousarray(array))

    def download(self, buffer: Buffer) -> np.ndarray:
        with self.device:
            return buffer.get(stream=self.stream)

    def empty(self, shape: Sequence[int], dtype: Any) -> Buffer:
        with self.device, self.stream:  # the pool reuses memory in this stream's order
            return self.cp.empty(tuple(int(d) for d in shape), np.dtype(dtype))

    def view(self, buffer: Buffer, shape: Sequence[int]) -> Buffer:
        return buffer.reshape(tuple(int(d) for d in shape))

    @property
    def dummy(self) -> Buffer:
        return self._dummy

    # --- cuBLAS int8 GEMM -------------------------------------------------------------------------------

    def int8_gemm_raw(self, left: Buffer, right: Buffer, rows: int, cols: int, k4: int) -> Buffer | None:
        """raw[rows][cols] = left . right^T on packed signed bytes through cublasGemmEx, or None
        when cuBLAS is off, the shape is too small or misaligned, or cuBLAS declines it."""
        if not self.cublas or cols % 4 or rows % 4 or rows * cols * 4 * k4 < CUBLAS_MIN_MACS:
            return None
        from cupy.cuda import cublas

        kp = 4 * k4  # bytes per row: a multiple of 4, as int8 GEMM needs for lda and ldb
        with self.device, self.stream:
            out = self.cp.empty((rows, cols), np.int32)
            handle = self.device.cublas_handle  # cupy binds it to the current stream (ours) per call
            one, zero = np.ones(1, np.int32), np.zeros(1, np.int32)
            try:
                cublas.gemmEx(
                    handle, CUBLAS_OP_T, CUBLAS_OP_N, cols, rows, kp,
                    one.ctypes.data, right.data.ptr, getattr(self.cp.cuda.runtime, "CUDA_R_8I", CUDA_R_8I), kp,
                    left.data.ptr, getattr(self.cp.cuda.runtime, "CUDA_R_8I", CUDA_R_8I), kp,
                    zero.ctypes.data, out.data.ptr, getattr(self.cp.cuda.runtime, "CUDA_R_32I", CUDA_R_32I), cols,
                    getattr(cublas, "CUBLAS_COMPUTE_32I", CUBLAS_COMPUTE_32I),
                    getattr(cublas, "CUBLAS_GEMM_DEFAULT", CUBLAS_GEMM_DEFAULT),
                )
            except cublas.CUBLASError as err:
                log.warning("device %s: cuBLAS int8 GEMM declined %dx%dx%d (%s); using the dp4a kernel from now on",
                            self.name, rows, cols, kp, err)
                self.cublas = False
                return None
        return out

    # --- running and timing --------------------------------------------------------------------------------

    def run(self, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        if self.throttle <= 1.0:
            return super().run(op, inputs)
        outputs, seconds = self._events_around(op, inputs)
        time.sleep((self.throttle - 1.0) * seconds)
        return outputs

    def timed_run(self, op: Op, inputs: Sequence[Buffer]) -> tuple[list[Buffer], float]:
        """Outputs and the op's GPU time between two CUDA events (times throttle)."""
        outputs, seconds = self._events_around(op, inputs)
        if self.throttle > 1.0:
            time.sleep((self.throttle - 1.0) * seconds)
        return outputs, self.throttle * seconds

    def _events_around(self, op: Op, inputs: Sequence[Buffer]) -> tuple[list[Buffer], float]:
        with self.device:
            start, end = self.cp.cuda.Event(), self.cp.cuda.Event()
            start.record(self.stream)
            outputs = KernelDevice.run(self, op, inputs)
            end.record(self.stream)
            end.synchronize()
            return outputs, self.cp.cuda.get_elapsed_time(start, end) * 1e-3

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.synchronize()
        super().close()
        self._functions.clear()
        self._modules.clear()
