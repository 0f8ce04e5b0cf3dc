"""`jaxtts.logs.setup_logging`: our INFO on the terminal, the libraries' only from WARNING
unless verbose; everything in the log file."""

import logging

import pytest
from absl import logging as absl_logging

from jaxtts import logs


@pytest.fixture
def clean_root():
  root = logging.getLogger()
  handlers, level = list(root.handlers), root.level
  yield
  for h in list(root.handlers):
    root.removeHandler(h)
  for h in handlers:
    root.addHandler(h)
  root.setLevel(level)


def _emit():
  absl_logging.info("Closing _NonBlockingMetadataStore(path)")   # Orbax's INFO noise
  logging.getLogger("orbax.checkpoint").info("orbax info")
  logging.getLogger("jax._src.xla_bridge").info("jax info")
  logging.getLogger("jaxtts.train").info("resumed from step 4")
  absl_logging.warning("absl warning")


def test_terminal_shows_ours_and_library_warnings(clean_root, capsys, tmp_path):
  log_file = tmp_path / "run.log"
  logs.setup_logging(verbose=False, log_file=str(log_file))
  _emit()
  err = capsys.readouterr().err
  assert "resumed from step 4" in err and "absl warning" in err
  assert "_NonBlockingMetadataStore" not in err and "orbax info" not in err
  assert "jax info" not in err
  written = log_file.read_text()
  for text in ("_NonBlockingMetadataStore", "orbax info", "jax info", "resumed from step 4"):
    assert text in written


def test_verbose_shows_library_info(clean_root, capsys):
  logs.setup_logging(verbose=False)
  logs.setup_logging(verbose=True)
  _emit()
  err = capsys.readouterr().err
  assert "_NonBlockingMetadataStore" in err and "orbax info" in err
  assert err.count("resumed from step 4") == 1  # one handler, however often it is set up
