"""Probe every OpenCL device by building and running a tiny kernel; run as a separate process.

``hetero.backends.discovery`` runs this file with the same Python (``python opencl_probe.py``), so that a
driver that crashes or aborts while compiling (an old LLVM on a newer CPU) takes down only this
process. It imports nothing from hetero. It reads one JSON object on stdin (``source``,
``options``: the kernel and build options to probe with, null for the defaults below; ``start``:
the first device to probe, counted over all platforms; with no ``source`` of the caller's the
``BUILTINS`` kernel runs too) and writes JSON lines on stdout, flushed
one by one so a crash loses only the device being probed:

    {"event": "device", "index", "platform_index", "device_index", "platform_name",
     "platform_version", "library", "icd", "origin", "name", "vendor", "compute_units", "memory_bytes"}
    {"event": "result", "index", "ok": bool, "error": first line of the compiler or runtime error}
    {"event": "fatal", "error": why nothing could be listed}

Every device line comes first, then one result line per device from ``start`` on.
``list_devices`` is the one enumeration of OpenCL devices: the backend imports it to find, in its
own process, the device a probed address names.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import sys
from typing import Any

#: a kernel every OpenCL 1.2 device builds; the probe checks what it wrote
SOURCE = """
__kernel void probe(__global int *data, const int offset) {
    int i = (int)get_global_id(0);
    data[i] = 3 * data[i] + offset;
}
"""
OPTIONS = ["-cl-std=CL1.2"]  # what the OpenCL backend builds with (opencl.BASE_OPTIONS)
ITEMS = 64

#: the built-ins hetero's kernels (kernels/*.cl) call, on the vector widths they use. A driver
#: compiles a built-in for the device when a kernel using it first runs, so a compiler that cannot
#: generate code for this CPU fails here, in the probe's process, and not in the user's: the
#: pyopencl wheel's PoCL (LLVM 14) dies on float16 fma on AMD Zen 4 and Zen 5.
BUILTINS = """
__kernel void builtins(__global const uchar *x, __global float *y, __global uchar *q, const float s) {
    int i = (int)get_global_id(0);
    float16 v = convert_float16(vload16(i, x));
    float16 w = fma(v, (float16)(s), (float16)(0.5f));
    float8 h = fma(v.lo, v.hi, (float8)(1.0f));
    float4 f = fma(v.lo.lo, v.hi.hi, (float4)(2.0f));
    w = fmin(fmax(rint(w), (float16)(0.0f)), (float16)(255.0f));
    int16 r = convert_int16(w) + convert_int16(ceil(v * 0.25f));
    vstore16(convert_uchar16_sat(r), i, q);
    y[i] = exp(v.s0 * 0.01f) + sqrt(v.s1 + 1.0f) + tanh(v.s2 * 0.01f) + log(v.s3 + 1.0f)
         + erf(v.s4 * 0.01f) + fmod(v.s5, 7.0f) + sin(v.s6 * 0.01f) + h.s0 + f.s1;
}
"""


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def library_of(platform: Any) -> str:
    """The shared library implementing a platform: a cl_platform_id points first to the ICD
    dispatch table, which lives in the driver's library (dladdr names it); "" if unknown."""
    try:
        libc = ctypes.CDLL(None)
        libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        table = ctypes.c_void_p.from_address(platform.int_ptr).value
        info = _DlInfo()
        if table and libc.dladdr(table, ctypes.byref(info)) and info.dli_fname:
            return os.fsdecode(info.dli_fname)
    except (OSError, AttributeError, ValueError) as err:
        print(f"opencl_probe: cannot locate the library of {platform.name}: {err}", file=sys.stderr)
    return ""


def icd_file(library: str, pyopencl_dir: str) -> str:
    """The ICD file (a vendors directory's *.icd, or the one in the pyopencl wheel) that names
    ``library``, "" if none does. ocl-icd reads OCL_ICD_VENDORS, else /etc/OpenCL/vendors."""
    vendors = os.environ.get("OCL_ICD_VENDORS") or "/etc/OpenCL/vendors"
    candidates = [vendors] if vendors.endswith(".icd") else sorted(glob.glob(os.path.join(vendors, "*.icd")))
    candidates += sorted(glob.glob(os.path.join(pyopencl_dir, ".libs", "*.icd")))
    real = os.path.realpath(library)
    for path in candidates:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                named = handle.read().strip()
        except OSError:
            continue
        if named and (os.path.realpath(named) == real or os.path.basename(named) == os.path.basename(real)):
            return path
    return ""


def debian_package(path: str) -> str:
    """The Debian package that installed ``path`` (dpkg's file lists of OpenCL/ICD packages)."""
    wanted = {path, os.path.realpath(path)}
    for listing in glob.glob("/var/lib/dpkg/info/*.list"):
        package = os.path.basename(listing)[: -len(".list")].split(":")[0]
        if not any(word in package for word in ("opencl", "icd", "pocl")):
            continue
        try:
            with open(listing, encoding="utf-8", errors="replace") as handle:
                if any(line.rstrip("\n") in wanted for line in handle):
                    return package
        except OSError:
            continue
    return ""


def origin_of(library: str, icd: str, pyopencl_dir: str) -> str:
    """Who installed a driver: "pyopencl wheel", "Debian <package>" (of its ICD file, else of the
    library), or "" if unknown."""
    if not library:
        return ""
    if os.path.realpath(library).startswith(os.path.realpath(pyopencl_dir) + os.sep):
        return "pyopencl wheel"
    package = (debian_package(icd) if icd else "") or debian_package(library)
    return f"Debian {package}" if package else ""


def first_error_line(message: str) -> str:
    """The compiler's first error line in a pyopencl error message (else its first line)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for marker in ("error:", "error"):
        for line in lines:
            if marker in line.lower() and not line.startswith("clBuildProgram failed"):
                return line
    return lines[0].split(" - ")[0] if lines else "unknown error"  # "clBuildProgram failed: X - <same again>"


def run_builtins(cl: Any, np: Any, context: Any, queue: Any, options: list[str]) -> str:
    """"" when the ``BUILTINS`` kernel builds, runs and writes plausible values, else why not."""
    program = cl.Program(context, BUILTINS).build(options=options)
    x = (np.arange(16 * ITEMS) % 251).astype(np.uint8)
    flags = cl.mem_flags
    x_buffer = cl.Buffer(context, flags.READ_ONLY | flags.COPY_HOST_PTR, hostbuf=x)
    y_buffer = cl.Buffer(context, flags.WRITE_ONLY, 4 * ITEMS)
    q_buffer = cl.Buffer(context, flags.WRITE_ONLY, 16 * ITEMS)
    program.builtins(queue, (ITEMS,), None, x_buffer, y_buffer, q_buffer, np.float32(0.3))
    y = np.empty(ITEMS, np.float32)
    q = np.empty(16 * ITEMS, np.uint8)
    cl.enqueue_copy(queue, y, y_buffer)
    cl.enqueue_copy(queue, q, q_buffer)
    queue.finish()
    v = x.astype(np.float64)
    expected = np.clip(np.clip(np.rint(v * 0.3 + 0.5), 0, 255) + np.ceil(v * 0.25), 0, 255)
    if not np.isfinite(y).all() or np.abs(q.astype(np.float64) - expected).max() > 1:
        return "the built-in functions' probe kernel ran but wrote wrong values"
    return ""


def probe(cl: Any, np: Any, device: Any, source: str, options: list[str], builtins: bool = True) -> str:
    """"" when the device builds and runs ``source`` correctly (and, with ``builtins``, the
    ``BUILTINS`` kernel), else the first error line."""
    try:
        context = cl.Context([device])
        queue = cl.CommandQueue(context, properties=cl.command_queue_properties.PROFILING_ENABLE)
        program = cl.Program(context, source).build(options=options)
        host = np.arange(ITEMS, dtype=np.int32)
        flags = cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR
        buffer = cl.Buffer(context, flags, hostbuf=host)
        event = program.probe(queue, (ITEMS,), None, buffer, np.int32(7))
        result = np.empty_like(host)
        cl.enqueue_copy(queue, result, buffer, wait_for=[event])
        queue.finish()
        if not np.array_equal(result, 3 * host + 7):
            return "the probe kernel ran but wrote wrong values"
        if event.profile.end < event.profile.start:
            return "event profiling gives an end before the start"
        if builtins:
            return run_builtins(cl, np, context, queue, options)
    except cl.Error as err:  # LogicError, RuntimeError (a failed build), MemoryError
        return first_error_line(str(err))
    return ""


def list_devices(cl: Any) -> tuple[list[tuple[int, Any, int, Any]], list[str]]:
    """Every OpenCL device as (platform index, platform, device index, device), platforms in
    pyopencl's order, and a line per platform that lists no devices: the one enumeration, used
    here and by the OpenCL backend to find the device an address names. Raises cl.Error when
    there is no platform at all."""
    listed, problems = [], []
    for platform_index, platform in enumerate(cl.get_platforms()):
        try:
            devices = platform.get_devices()
        except cl.Error as err:
            problems.append(f"platform {platform.name} lists no devices: {err}")
            continue
        listed.extend((platform_index, platform, device_index, device) for device_index, device in enumerate(devices))
    return listed, problems


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main() -> int:
    request = json.loads(sys.stdin.read() or "{}")
    builtins = not request.get("source")  # a caller's own kernel is probed alone
    source = request.get("source") or SOURCE
    options = request.get("options")
    options = OPTIONS if options is None else list(options)
    start = int(request.get("start", 0))
    try:
        import numpy as np
        import pyopencl as cl
    except ImportError as err:
        emit({"event": "fatal", "error": f"pyopencl cannot be imported ({err})"})
        return 0
    try:
        listed, problems = list_devices(cl)
    except cl.Error as err:
        emit({"event": "fatal", "error": f"no OpenCL platform ({first_error_line(str(err))})"})
        return 0
    for problem in problems:
        print(f"opencl_probe: {problem}", file=sys.stderr)
    pyopencl_dir = os.path.dirname(os.path.abspath(cl.__file__))
    devices = []
    drivers: dict[int, tuple[str, str, str]] = {}  # platform index -> (library, icd, origin)
    for platform_index, platform, device_index, device in listed:
        if platform_index not in drivers:
            library = library_of(platform)
            icd = icd_file(library, pyopencl_dir) if library else ""
            drivers[platform_index] = (library, icd, origin_of(library, icd, pyopencl_dir))
        library, icd, origin = drivers[platform_index]
        emit({
            "event": "device", "index": len(devices), "platform_index": platform_index,
            "device_index": device_index, "platform_name": platform.name.strip(),
            "platform_version": platform.version.strip(), "library": os.path.realpath(library) if library else "",
            "icd": icd, "origin": origin, "name": device.name.strip(),
            "vendor": device.vendor.strip(), "compute_units": int(device.max_compute_units),
            "memory_bytes": int(device.global_mem_size),
        })
        devices.append(device)
    for index in range(start, len(devices)):
        error = probe(cl, np, devices[index], source, options, builtins)
        emit({"event": "result", "index": index, "ok": not error, "error": error})
    return 0


if __name__ == "__main__":
    sys.exit(main())
