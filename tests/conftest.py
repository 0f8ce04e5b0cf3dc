"""Shared fixtures: small corpora the project makes itself (no downloads)."""

import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory):
  """A fast synthetic corpus in the real layout (harmonic 'voices'; no espeak)."""
  from jaxtts.data.synthetic import write_synthetic_corpus
  out = tmp_path_factory.mktemp("synthetic_corpus")
  write_synthetic_corpus(str(out), num_speakers=4, utterances_per_speaker=12,
                         zero_shot_speakers=1, seed=0)
  return str(out)


def subprocess_env(num_devices: int = 1) -> dict:
  """Environment for a child JAX process with `num_devices` CPU devices."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("PYTHONHASHSEED", "0")
  # Runs of one shape share compiled programs through JAX's persistent cache (CPU).
  env["JAX_COMPILATION_CACHE_DIR"] = COMPILE_CACHE
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  return env


PYTHON = sys.executable
COMPILE_CACHE = os.path.join(tempfile.gettempdir(), f"jaxtts-test-jit-cache-{os.getuid()}")
