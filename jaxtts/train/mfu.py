"""Peak FLOP/s per chip and utilisation figures.

MFU = model FLOPs per step (the task's analytic `flops_per_step`, no recomputation) / devices x
steps/s / peak; HFU uses XLA's cost analysis of the compiled step instead (per device; it
counts rematerialised forward passes and zero-padding work). Peaks are dense bf16 (MaxText's
convention; an fp32 run is measured against the same peak). ``train.peak_flops_per_device``
overrides the table (0 = from the table); on a chip the table lacks (CPU) MFU is not logged.
"""

from __future__ import annotations

from typing import Any

import jax

# device_kind substring (lower case) -> dense bf16 FLOP/s per chip. Most specific first.
PEAK_BF16_FLOPS = (
    ("tpu v6 lite", 918e12),   # v6e (Trillium)
    ("tpu v6e", 918e12),
    ("tpu v5 lite", 197e12),   # v5e
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),        # v5p reports "TPU v5"
    ("tpu v4", 275e12),
    ("h200", 989e12),          # SXM, dense (no sparsity)
    ("h100 pcie", 756e12),
    ("h100", 989e12),          # SXM
    ("a100", 312e12),
)


def peak_flops_per_device(override: float = 0.0, device: Any = None) -> float | None:
  """``override`` when > 0, else the table's peak for ``device`` (default: the first JAX
  device), else None (unknown chip, e.g. CPU)."""
  if override and float(override) > 0:
    return float(override)
  if device is None:
    device = jax.devices()[0]
  if getattr(device, "platform", "") == "cpu":
    return None
  kind = str(getattr(device, "device_kind", "")).lower()
  for key, peak in PEAK_BF16_FLOPS:
    if key in kind:
      return peak
  return None


def utilisation(flops_per_device_step: float, steps_per_sec: float,
                peak: float | None) -> float | None:
  """Achieved FLOP/s over peak, or None without a peak or a count."""
  if not peak or not flops_per_device_step:
    return None
  return flops_per_device_step * steps_per_sec / peak
