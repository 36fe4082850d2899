"""Efficient single-image super-resolution pipeline (ClassSR, GhostSR, CSD, PCL, RFDN) on DVC,
Accelerate and MLflow.

Deliberately import-free: every module a stage imports is a DVC dependency of that stage (and part of
its resume fingerprint, see :mod:`pipeline.imports`), so this file must not pull any module in.
"""
