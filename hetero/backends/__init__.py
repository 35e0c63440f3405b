"""Execution backends: one module per device kind (reference numpy now; numba, OpenCL, CUDA next)."""
