"""Compute dtypes by config name (``train.compute_dtype``)."""

from __future__ import annotations

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype_of(name: str, field: str = "config.train.compute_dtype"):
  """The dtype called ``name``; an unknown name is a ValueError naming ``field``."""
  if name not in DTYPES:
    raise ValueError(f"{field}: {name!r} is not one of {sorted(DTYPES)}")
  return DTYPES[name]
