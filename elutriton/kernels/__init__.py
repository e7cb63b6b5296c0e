"""Triton kernels, their configs and launchers; one file per op family."""
