"""Logging for the command-line tools: ours at INFO, libraries' at WARNING unless verbose.

Orbax, absl, JAX and Grain log at INFO on every checkpoint open and close (``Closing
_NonBlockingMetadataStore(...)``); a user of ``jaxtts-*`` sees those only with ``--verbose``
or in ``log_file``.
"""

from __future__ import annotations

import logging
from typing import Optional

from absl import logging as absl_logging

LIBRARIES = ("absl", "orbax", "jax", "jaxlib", "grain", "urllib3", "matplotlib", "numba",
             "faster_whisper", "h5py", "tensorboardX")
FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def setup_logging(verbose: bool = False, log_file: Optional[str] = None) -> None:
  """Root handler on stderr; ``jaxtts.*`` at INFO; the `LIBRARIES` at WARNING unless
  ``verbose``. With ``log_file`` every record (libraries' INFO too) also goes there."""
  root = logging.getLogger()
  root.setLevel(logging.INFO)
  for h in list(root.handlers):
    root.removeHandler(h)
  console = logging.StreamHandler()
  console.setFormatter(logging.Formatter(FORMAT))
  if not verbose:
    console.addFilter(_QuietLibraries())
  root.addHandler(console)
  if log_file:
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(file_handler)
  # absl (a dependency of JAX and Orbax) routes its records through Python logging.
  absl_logging.use_python_logging(quiet=True)


class _QuietLibraries(logging.Filter):
  """Drops library records below WARNING."""

  def filter(self, record: logging.LogRecord) -> bool:
    top = record.name.split(".", 1)[0]
    return record.levelno >= logging.WARNING or top not in LIBRARIES
