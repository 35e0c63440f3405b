"""backends/kernels"""
