"""Every kernels/*.cl compiles as CUDA through kernels/cuda_prelude.h, so a kernel edit that
breaks the CUDA backend fails here, on machines without a GPU.

One ``nvcc --ptx`` per kernel file per target (a Hopper and an older Turing target), on the
exact translation unit CudaDevice hands to NVRTC. Skipped when nvcc is absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hetero.backends.cuda import cuda_source
from hetero.backends.kernels.common import kernel_files

NVCC = shutil.which("nvcc") or next(
    (str(p) for p in (Path("/usr/local/cuda/bin/nvcc"),) if p.is_file()), None
)
ARCHS = ("sm_90", "sm_75")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (the CUDA toolkit is needed to compile)")


def test_kernel_files_found() -> None:
    assert {"conv", "gemm", "qconv", "qgemm", "qmisc", "copy", "pool", "elementwise"} <= set(kernel_files())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", kernel_files())
def test_kernel_compiles_for_cuda(name: str, arch: str, tmp_path: Path) -> None:
    source = tmp_path / f"{name}.cu"
    source.write_text(cuda_source(name), encoding="utf-8")
    command = [str(NVCC), "--ptx", f"-arch={arch}", "--std=c++14", "-Werror=all-warnings", "-o",
               str(tmp_path / f"{name}.ptx"), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"kernels/{name}.cl does not compile for CUDA {arch}:\n{result.stderr[-4000:]}"
    ptx = (tmp_path / f"{name}.ptx").read_text(encoding="utf-8")
    assert ".entry" in ptx, f"kernels/{name}.cl compiled to PTX without kernels"


def _nvrtc_library() -> str | None:
    """libnvrtc from the CUDA toolkit or the nvidia-cuda-nvrtc wheel, when one is installed."""
    import ctypes.util
    import glob
    import os
    import site

    roots = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    patterns = [f"{r}/lib64/libnvrtc.so*" for r in roots if r]
    patterns += [f"{s}/nvidia/cuda_nvrtc/lib/libnvrtc.so*" for s in site.getsitepackages()]
    for pattern in patterns:
        found = sorted(p for p in glob.glob(pattern) if "builtins" not in p and ".alt." not in p)
        if found:
            return found[0]
    return ctypes.util.find_library("nvrtc")


@pytest.mark.parametrize("name", kernel_files())
def test_kernel_compiles_with_nvrtc(name: str) -> None:
    """The runtime compiler (no host headers) accepts the same source, warning-free."""
    import ctypes

    path = _nvrtc_library()
    if path is None:
        pytest.skip("libnvrtc is not installed (it comes with cupy's CUDA wheels)")
    nvrtc = ctypes.CDLL(path)
    program = ctypes.c_void_p()
    source = cuda_source(name).encode()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, f"{name}.cu".encode(), 0, None, None) == 0
    try:
        options = [b"--std=c++14", b"--gpu-architecture=compute_75"]
        status = nvrtc.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        text = log.value.decode(errors="replace").strip()
        assert status == 0 and "warning" not in text, f"NVRTC rejects kernels/{name}.cl:\n{text[-4000:]}"
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
