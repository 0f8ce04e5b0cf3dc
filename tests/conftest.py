"""Shared fixtures: small corpora the project makes itself (no downloads)."""

import faulthandler
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# numba's `guvectorize(cache=True)` (librosa compiles its utilities at import, pYIN's on first
# call) writes a function's two cache files separately; processes compiling into one cache at
# once can mix them and segfault on load (numba/numba#10128; seen here: two pytest-xdist
# workers, or two trainer processes, importing librosa together, then librosa.pyin crashed a
# worker). So no two processes share a numba cache: the controller fills a template once
# (`_warm_numba_template`, serially), and every worker and child process gets a private copy.
NUMBA_CACHE_BASE = os.path.join(
    tempfile.gettempdir(),
    f"jaxtts-test-numba-{os.getuid()}-{zlib.crc32(sys.prefix.encode()):08x}")
NUMBA_TEMPLATE = NUMBA_CACHE_BASE + "-template"
RUN_VAR = "JAXTTS_TEST_RUN"
_WARM = ("import numpy as np, librosa; t = np.arange(16000) / 16000; "
         "librosa.pyin((0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), fmin=60, "
         "fmax=500, sr=16000)")
_children = iter(range(1 << 30))


def _warm_numba_template():
  from filelock import FileLock  # pylint: disable=import-outside-toplevel
  with FileLock(NUMBA_TEMPLATE + ".lock"):
    if os.path.exists(os.path.join(NUMBA_TEMPLATE, ".done")):
      return
    shutil.rmtree(NUMBA_TEMPLATE, ignore_errors=True)
    subprocess.run([sys.executable, "-c", _WARM], check=True, capture_output=True, timeout=900,
                   env=dict(os.environ, NUMBA_CACHE_DIR=NUMBA_TEMPLATE))
    with open(os.path.join(NUMBA_TEMPLATE, ".done"), "w") as f:
      f.write("ok")


def private_numba_cache(name: str) -> str:
  """A fresh copy of the template numba cache for one process of this run; returns its path."""
  path = f"{NUMBA_CACHE_BASE}-run{os.environ.get(RUN_VAR, os.getpid())}-{name}"
  shutil.rmtree(path, ignore_errors=True)
  if os.path.isdir(NUMBA_TEMPLATE):
    shutil.copytree(NUMBA_TEMPLATE, path, ignore=shutil.ignore_patterns(".done"))
  else:
    os.makedirs(path)
  return path

# XLA:CPU at LLVM -O0 in the workers and every child process: the suite is dominated by
# compiling small programs, and -O0 compiles them in about half the time (the tiny codec's
# jitted init 29 s -> 11 s, its generator gradient 10 s -> 6 s on the 2-core CI machine) while
# the programs run a little slower. Numerics are unchanged: XLA emits the same float ops in the
# same order (no fast-math at any level); only LLVM's optimisation of them is skipped.
XLA_TEST_FLAGS = "--xla_backend_optimization_level=0"
if XLA_TEST_FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_TEST_FLAGS).strip()

# One thread per runtime in each worker (two workers share the CI machine's two cores): OpenMP
# (torch, CTranslate2), OpenBLAS and MKL; children inherit it.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_var, "1")

# A native crash of a pytest-xdist worker (SIGSEGV, abort) is dumped by faulthandler to a file
# of that worker, and the controller prints the innermost frames of every thread at the end of
# the run, where CI logs keep them (pytest's own faulthandler plugin is off: pyproject.toml).
CRASH_DIR_VAR = "JAXTTS_TEST_CRASH_DIR"
_crash_file = None


def pytest_configure(config):
  global _crash_file  # pylint: disable=global-statement
  worker = os.environ.get("PYTEST_XDIST_WORKER")
  if worker:  # the controller set up the run (below) before starting the workers
    os.environ["NUMBA_CACHE_DIR"] = private_numba_cache(worker)
    if os.environ.get(CRASH_DIR_VAR):
      _crash_file = open(os.path.join(os.environ[CRASH_DIR_VAR], f"{worker}.txt"), "w")  # pylint: disable=consider-using-with
      faulthandler.enable(file=_crash_file, all_threads=True)
      return
  else:
    os.environ[RUN_VAR] = str(os.getpid())
    _warm_numba_template()
    os.environ["NUMBA_CACHE_DIR"] = private_numba_cache("main")
  faulthandler.enable(file=sys.stderr, all_threads=True)
  if not worker and getattr(config.option, "numprocesses", None):
    os.environ[CRASH_DIR_VAR] = tempfile.mkdtemp(prefix="jaxtts-test-crash-")


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if not os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(RUN_VAR):
    for path in glob.glob(f"{NUMBA_CACHE_BASE}-run{os.environ[RUN_VAR]}-*"):
      shutil.rmtree(path, ignore_errors=True)
    if os.environ.get(CRASH_DIR_VAR):
      shutil.rmtree(os.environ[CRASH_DIR_VAR], ignore_errors=True)


def _innermost_frames(dump: str, per_thread: int = 12) -> list:
  """The fault line and each thread's first ``per_thread`` frames (most recent first)."""
  out, kept = [], 0
  for line in dump.splitlines():
    if line.startswith("Extension modules"):
      continue
    if not line.startswith("  "):
      out.append(line)
      kept = 0
    elif kept < per_thread:
      out.append(line)
      kept += 1
  return out


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
  crash_dir = os.environ.get(CRASH_DIR_VAR)
  if os.environ.get("PYTEST_XDIST_WORKER") or not crash_dir or not os.path.isdir(crash_dir):
    return
  for name in sorted(os.listdir(crash_dir)):
    with open(os.path.join(crash_dir, name)) as f:
      dump = f.read().strip()
    if dump:
      terminalreporter.section(f"native crash of worker {name[:-4]} (faulthandler)")
      for line in _innermost_frames(dump):
        terminalreporter.write_line(line)


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
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices} {XLA_TEST_FLAGS}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("PYTHONHASHSEED", "0")
  env["NUMBA_CACHE_DIR"] = private_numba_cache(
      f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-child{next(_children)}")
  # Runs of one shape share compiled programs through JAX's persistent cache (CPU).
  env["JAX_COMPILATION_CACHE_DIR"] = COMPILE_CACHE
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  return env


PYTHON = sys.executable
COMPILE_CACHE = os.path.join(tempfile.gettempdir(), f"jaxtts-test-jit-cache-{os.getuid()}")


def run_python(*args, check=True):
  proc = subprocess.run([PYTHON, *map(str, args)], env=subprocess_env(1), cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _train(config, workdir, *overrides):
  run_python("-m", "jaxtts.train", "--config", os.path.join(ROOT, "configs", config),
             "--workdir", workdir, "--config.train.eval_every_steps=0", "--config.train.sample_every_steps=0",
      "--config.logging.progress_bar=False", "--config.train.batch_size=4", *overrides)


def _build_once(tmp_path_factory, worker_id: str, name: str, build):
  """``build(dir)`` once per test run: pytest-xdist workers share the directory (in their
  common temp dir) under a file lock; a build that died half-way is redone."""
  from filelock import FileLock  # pylint: disable=import-outside-toplevel
  base = tmp_path_factory.getbasetemp()
  shared = base.parent if worker_id != "master" else base
  root = shared / name
  with FileLock(str(shared / f"{name}.lock")):
    if not (root / ".done").exists():
      if root.exists():
        shutil.rmtree(root)
      root.mkdir()
      build(root)
      (root / ".done").write_text("ok")
  return root


@pytest.fixture(scope="session")
def reference_run(synthetic_corpus, tmp_path_factory, worker_id):
  """An uninterrupted 6-step tiny-codec run on one device: the reference of the trainer's
  sharding, multi-process and resume tests (`train_helpers`)."""
  from train_helpers import run, train_cmd  # pylint: disable=import-outside-toplevel
  # Eval and samples at the last step (they read their own iterator; training is unaffected).
  # The synthetic valid split is smaller than a batch; the held-out speaker's split is not.
  root = _build_once(tmp_path_factory, worker_id, "reference_run", lambda r: run(train_cmd(
      r / "workdir", synthetic_corpus, 6, **{"train.eval_every_steps": 6,
                                             "train.sample_every_steps": 6,
                                             "data.eval_split": "test_zero_shot"})))
  return str(root / "workdir")


@pytest.fixture(scope="session")
def facodec_run(tmp_path_factory, worker_id):
  """A synthetic corpus with F0 and a tiny FACodec trained 4 steps on it (every loss term on,
  dead-code restarts every 2 steps, samples with voice conversions at the last step): shared by the FACodec CLI, evaluation and notebook
  tests (built once)."""
  from jaxtts.data.synthetic import write_synthetic_corpus  # pylint: disable=import-outside-toplevel

  def build(root):
    write_synthetic_corpus(str(root / "corpus"), num_speakers=3, utterances_per_speaker=6,
                           zero_shot_speakers=2, seed=0, f0=True)
    _train("facodec.py:tiny", str(root / "workdir"), f"--config.data.dir={root / 'corpus'}",
           "--config.train.steps=4", "--config.checkpoint.every_steps=4",
           "--config.train.sample_every_steps=4", "--config.dead_code_reset.every_steps=2",
           "--config.data.eval_split=test_zero_shot")

  root = _build_once(tmp_path_factory, worker_id, "facodec_run", build)
  return {"corpus": str(root / "corpus"), "workdir": str(root / "workdir")}


@pytest.fixture(scope="session")
def ns3_run(facodec_run, tmp_path_factory, worker_id):
  """`facodec_run`'s FACodec -> code shards (`encode-dataset`) -> a tiny NS3 trained 24 steps
  (eval at 12 and 24 on the held-out split, samples at 24): the NS3 task, generator,
  evaluation and notebook tests' chain (built once)."""
  def build(root):
    run_python("-m", "jaxtts.codec.cli", "encode-dataset", "--workdir",
               facodec_run["workdir"], "--data-dir", facodec_run["corpus"], "--out",
               root / "codes")
    _train("ns3.py:tiny", str(root / "ns3"), f"--config.data.dir={root / 'codes'}",
           "--config.train.steps=24", "--config.checkpoint.every_steps=24",
           "--config.train.batch_size=6", "--config.train.eval_every_steps=12",
           "--config.train.sample_every_steps=24", "--config.data.eval_split=test_zero_shot")

  root = _build_once(tmp_path_factory, worker_id, "ns3_run", build)
  return {**facodec_run, "codes": str(root / "codes"), "ns3": str(root / "ns3")}


@pytest.fixture(scope="session")
def clone_run(chain, tmp_path_factory, worker_id):
  """A tiny CLONE (reference encoder, the source-filter decoder of ``model.excitation``)
  trained 8 steps through `jaxtts-train` on the chain's espeak corpus (with F0), eval at steps
  4 and 8 and samples at step 8 on the held-out speaker: the CLONE training, generator and
  notebook tests' workdir (built once)."""
  root = _build_once(tmp_path_factory, worker_id, "clone_run", lambda r: _train(
      "clone.py:tiny", str(r / "workdir"), f"--config.data.dir={chain['corpus']}",
      "--config.model.excitation=True",
      "--config.train.steps=8", "--config.train.eval_every_steps=4",
      "--config.train.sample_every_steps=8", "--config.checkpoint.every_steps=8",
      "--config.data.eval_split=test_zero_shot"))
  return root / "workdir"


@pytest.fixture(scope="session")
def chain(tmp_path_factory, worker_id):
  """Espeak corpus -> codec (2 steps) -> latent shards -> GMM-LM (3 steps): a real, untrained
  zero-shot chain shared by the synthesis, evaluation and notebook tests (built once)."""
  from jaxtts.data.source import CorpusSource  # pylint: disable=import-outside-toplevel
  root = _build_once(tmp_path_factory, worker_id, "synth_chain",
                     lambda r: _build_chain(*(str(r / n) for n in ("corpus", "codec", "latents",
                                                                   "lm"))))
  corpus, codec, latents, lm = (str(root / n) for n in ("corpus", "codec", "latents", "lm"))
  prompt = CorpusSource(corpus, "test_zero_shot").example(0)
  return {"corpus": corpus, "codec": codec, "latents": latents, "lm": lm, "root": root,
          "prompt_audio": prompt["audio"], "prompt_text": prompt["text"]}


def _build_chain(corpus, codec, latents, lm):
  run_python("-m", "data_pipelines.espeak_corpus", "--out", corpus, "--speakers", 3,
             "--zero-shot-speakers", 1, "--utterances-per-speaker", 6, "--seed", 0,
             "--f0", "--no-progress")  # F0: the demos' corpus, and CLONE's excitation
  _train("gmm_vae.py:tiny", codec, f"--config.data.dir={corpus}", "--config.train.steps=2",
         "--config.checkpoint.every_steps=2", "--config.discriminator.start_step=2",
         "--config.data.segment_samples=1600", "--config.model.encoder_strides=(8,25)",
         # `make demo`'s codec form (configs/gmm_vae.py:cpu) at tiny sizes: the source-filter
         # Vocos head and the pitch in the latent's last two channels, so encode-dataset
         # (WORLD F0 on the host), the GMM-LM on those latents and decoding from them are the
         # chain's path
         "--config.model.decoder=vocos", "--config.model.vocos.dim=16",
         "--config.model.vocos.intermediate_dim=24", "--config.model.vocos.num_layers=1",
         "--config.model.excitation=True", "--config.model.f0_source=latent")
  run_python("-m", "jaxtts.codec.cli", "encode-dataset", "--workdir", codec, "--data-dir",
             corpus, "--out", latents)
  # One length bucket (6 s): one compiled train step; the two longer utterances are filtered.
  _train("gmm_lm.py:tiny", lm, f"--config.data.dir={latents}", "--config.train.steps=3",
         "--config.checkpoint.every_steps=3", "--config.data.bucket_samples=(96000,)",
         "--config.data.eval_split=test_zero_shot",
         "--config.train.sample_every_steps=3")  # samples decoded by the codec (test_eval)
