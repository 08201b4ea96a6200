"""Helpers of the viewer tests (imported by test modules; pytest puts tests/ on sys.path)."""

from __future__ import annotations


def fast_settings(panel, fast: dict, method: str = "st", **values) -> None:
    """Set a parameter panel to CPU, float32 and a small, fast configuration."""
    panel.method.value = method
    panel.device.value = "cpu"
    panel.precision.value = "fp32"
    for name, value in {**fast, **values}.items():
        panel.fields[name].value = value
