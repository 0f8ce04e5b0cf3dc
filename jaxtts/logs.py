"""Logging for the command-line tools: ours at INFO, libraries' at WARNING unless verbose.

Orbax, absl, JAX and Grain log at INFO on every checkpoint open and close (``Closing
_NonBlockingMetadataStore(...)``); a user of ``jaxtts-*`` sees those only with ``--verbose``
or in ``log_file``.
"""

from __future__ import annotations

import logging
import sys
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


def drop_failed_read_reports(path: str) -> None:
  """Once one array of ``path`` fails to read, TensorStore still completes the other reads:
  their tasks and futures end in errors nobody retrieves. asyncio reports each, whenever it
  is garbage-collected (often before the failed restore has returned), as "Task exception was
  never retrieved" or "Future exception was never retrieved" through the ``asyncio`` logger,
  and the interpreter as "Exception ignored in" or "Event loop is closed" through
  ``sys.unraisablehook``: dozens of tracebacks under the one logged line. Called *before* a
  step is read, this drops those reports, only those naming ``path`` (and the closed event
  loop), for the rest of the process. Used by the trainer's intact-checkpoint fallback and by
  `jaxtts.workdir`'s inference restore."""
  previous = sys.unraisablehook

  def hook(unraisable):
    exc = unraisable.exc_value
    if ((isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed")
        or path in _chain_text(exc)):
      return
    previous(unraisable)

  sys.unraisablehook = hook

  class _Unretrieved(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
      exc = record.exc_info[1] if record.exc_info else None
      return not ("exception was never retrieved" in record.getMessage()
                  and path in (_chain_text(exc) + record.getMessage()))

  logging.getLogger("asyncio").addFilter(_Unretrieved())


def _chain_text(e: BaseException | None) -> str:
  """``str`` of ``e`` and of every exception it was raised from (TensorStore names the file
  in the cause, Orbax the array in the wrapper)."""
  parts = []
  while e is not None and len(parts) < 16:
    parts.append(str(e))
    e = e.__cause__ or e.__context__
  return " ".join(parts)
