"""The Colab notebooks in notebooks/, executed end to end (nbclient, a python3 kernel of this
interpreter) against the tiny trained chain of conftest: parameters come from JAXTTS_*
environment variables, which the kernel inherits."""

import glob
import json
import math
import os
import re
import subprocess
import sys

import nbformat
import numpy as np
import pytest

from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.slow

NOTEBOOKS = os.path.join(ROOT, "notebooks")
TIMEOUT_S = 600  # per cell


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  """A ``python3`` kernelspec that runs this interpreter, first on JUPYTER_PATH (a user-level
  ``python3`` spec of another Python cannot shadow it), and the child JAX environment."""
  spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python 3 (jaxtts tests)", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user startup files
  for key, value in subprocess_env(1).items():  # JAX_PLATFORMS=cpu, PYTHONPATH, compile cache
    monkeypatch.setenv(key, value)
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  for key in [k for k in os.environ if k.startswith("JAXTTS_")]:
    monkeypatch.delenv(key)
  return monkeypatch


def _set_params(kernel_env, params):
  """The notebook's parameters as the ``JAXTTS_<NAME>`` variables its kernel inherits."""
  for key, value in params.items():
    kernel_env.setenv(f"JAXTTS_{key}", str(value))


# nbclient runs in a child process: its asyncio loop, zmq sockets and their threads then never
# share a pytest worker with the JAX, torch and CTranslate2 runtimes of the other tests.
_RUNNER = """
import sys, nbclient, nbformat
from jupyter_client.kernelspec import KernelSpecManager
assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable, "kernelspec"
src, dst, cwd, timeout = sys.argv[1:]
nb = nbformat.read(src, as_version=4)
try:
  nbclient.NotebookClient(nb, timeout=int(timeout), kernel_name="python3",
                          resources={"metadata": {"path": cwd}}).execute()
finally:
  nbformat.write(nb, dst)
"""


def _execute(name, tmp_path):
  """Runs a notebook (cwd ``tmp_path``) in a child process; keeps the executed copy there."""
  path = os.path.join(NOTEBOOKS, name)
  nb = nbformat.read(path, as_version=4)
  assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
      f"{name} is committed with outputs; clear them")
  executed = tmp_path / name
  proc = subprocess.run([sys.executable, "-c", _RUNNER, path, str(executed), str(tmp_path),
                         str(TIMEOUT_S)], env=dict(os.environ), capture_output=True, text=True,
                        timeout=4 * TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-4000:]
  nb = nbformat.read(str(executed), as_version=4)
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  return outputs


def _stdout(outputs):
  return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")


def _data(outputs, mime):
  return [o.data[mime] for o in outputs
          if o.output_type in ("display_data", "execute_result") and mime in o.data]


def test_zero_shot_notebook_on_clone(clone_run, chain, kernel_env, tmp_path):
  """The same notebook on an end-to-end CLONE workdir: no codec, no prompt transcript."""
  from jaxtts.audio.io import save_wav
  prompt = tmp_path / "prompt.wav"
  save_wav(prompt, chain["prompt_audio"], 16000)
  out_dir = tmp_path / "outputs"
  _set_params(kernel_env, {"WORKDIR": clone_run, "PROMPT_AUDIO": prompt, "TEXT": "Good morning.",
                           "MAX_SECONDS": 2, "EVAL_LIMIT": 1, "OUTPUT_DIR": out_dir})
  outputs = _execute("zero_shot_colab.ipynb", tmp_path)
  text = _stdout(outputs)
  assert '"generator": "clone"' in text and "durations (frames):" in text, text
  assert os.path.getsize(out_dir / "synthesis.wav") > 44
  assert [m for m in _data(outputs, "text/markdown") if "WER" in m]


def test_zero_shot_notebook_on_ns3(ns3_run, kernel_env, tmp_path):
  """The same notebook on the tiny NS3 chain (FACodec codes -> masked diffusion): the prompt's
  codes and timbre come from FACodec, its durations from aligning the prompt transcript on
  FACodec's phone posteriors; the synthesis' phone durations are printed. The evaluation cell
  is off (RUN_EVAL=0): its NS3 report is test_ns3's, the notebook's cell the other two tests'."""
  from jaxtts.audio.io import save_wav
  from jaxtts.data.source import CorpusSource
  source = CorpusSource(ns3_run["corpus"], "test_zero_shot")
  prompt_ex = source.example(0)
  target = min((source.example(i)["phonemes"] for i in range(1, len(source))), key=len)
  prompt = tmp_path / "prompt.wav"
  save_wav(prompt, prompt_ex["audio"].astype(np.float32) / 32768.0, 16000)
  out_dir = tmp_path / "outputs"
  _set_params(kernel_env, {"WORKDIR": ns3_run["ns3"], "PROMPT_AUDIO": prompt,
                           # The synthetic corpus' table has no text frontend: phoneme ids.
                           "PROMPT_PHONEMES": " ".join(map(str, prompt_ex["phonemes"])),
                           "TARGET_PHONEMES": " ".join(map(str, target)),
                           "MAX_SECONDS": 2, "RUN_EVAL": 0, "OUTPUT_DIR": out_dir})
  outputs = _execute("zero_shot_colab.ipynb", tmp_path)
  text = _stdout(outputs)
  assert '"generator": "ns3"' in text and "durations (frames):" in text, text
  assert os.path.getsize(out_dir / "synthesis.wav") > 44
  assert len([h for h in _data(outputs, "text/html") if "<audio" in h]) == 2
  assert os.path.getsize(out_dir / "synthesis.alignment.png") > 0
  assert not [m for m in _data(outputs, "text/markdown") if "WER" in m]  # RUN_EVAL=0


def test_zero_shot_notebook(chain, kernel_env, tmp_path):
  from jaxtts.audio.io import save_wav
  prompt = tmp_path / "prompt.wav"
  save_wav(prompt, chain["prompt_audio"], 16000)
  out_dir = tmp_path / "outputs"
  _set_params(kernel_env, {"WORKDIR": chain["lm"], "PROMPT_AUDIO": prompt,
                           "PROMPT_TEXT": chain["prompt_text"], "TEXT": "Good morning.",
                           "MAX_SECONDS": 2, "EVAL_LIMIT": 1, "OUTPUT_DIR": out_dir})
  # The codec: from the latent manifest.
  outputs = _execute("zero_shot_colab.ipynb", tmp_path)

  text = _stdout(outputs)
  assert "Not in Colab" in text and '"generator": "gmm_lm"' in text, text
  assert chain["codec"] in text and '"sample_rate": 16000' in text
  rtf = re.search(r"rtf (\d+\.\d+)", text)
  assert rtf and float(rtf.group(1)) > 0, text
  assert "durations (frames):" in text
  audio = [h for h in _data(outputs, "text/html") if "<audio" in h]
  assert len(audio) == 2  # prompt and synthesis
  pngs = _data(outputs, "image/png")
  assert len(pngs) >= 2  # the alignment figure and the first evaluation plot
  assert os.path.getsize(out_dir / "synthesis.wav") > 44
  assert os.path.getsize(out_dir / "synthesis.alignment.png") > 0
  # The evaluation: its report table, and the plots it wrote.
  tables = [m for m in _data(outputs, "text/markdown") if "WER" in m]
  assert len(tables) == 1 and "|" in tables[0], _data(outputs, "text/markdown")
  plots = glob.glob(str(out_dir / "eval" / "**" / "*.png"), recursive=True)
  assert plots and all(p in text for p in plots)


def test_codec_notebook(chain, kernel_env, tmp_path):
  from jaxtts.audio.io import save_wav
  audio = tmp_path / "utterance.wav"
  save_wav(audio, chain["prompt_audio"], 16000)
  out_dir = tmp_path / "outputs"
  _set_params(kernel_env, {"CODEC_WORKDIR": chain["codec"], "AUDIO": audio, "EVAL_LIMIT": 1,
                           "OUTPUT_DIR": out_dir})

  outputs = _execute("codec_colab.ipynb", tmp_path)

  text = _stdout(outputs)
  frames = -(-len(chain["prompt_audio"]) // 200)
  assert f"per-frame      shape ({frames}, " in text and "80 frames/s" in text, text
  for metric in ("mel_distance", "stft_distance", "si_sdr", "pesq_wb", "stoi"):
    value = re.search(rf"^{metric}\s+(-?\d+\.\d+)\s+(lower|higher)$", text, re.M)
    assert value and math.isfinite(float(value.group(1))), (metric, text)
  assert "visqol" not in text  # behind JAXTTS_RUN_VISQOL
  assert len([h for h in _data(outputs, "text/html") if "<audio" in h]) == 2
  assert _data(outputs, "image/png")  # spectrograms and latents
  assert os.path.getsize(out_dir / "reconstruction.wav") > 44
  tables = [m for m in _data(outputs, "text/markdown") if "|" in m and "mel_distance" in m]
  assert len(tables) == 1, _data(outputs, "text/markdown")


def test_codec_notebook_on_facodec(facodec_run, kernel_env, tmp_path):
  """The same notebook on a tiny FACodec workdir: codes and timbre, reconstruction, voice
  conversion to a prompt of another speaker, and the evaluation's VC and probe tables."""
  from jaxtts.audio.io import save_wav
  from jaxtts.data.source import CorpusSource
  source = CorpusSource(facodec_run["corpus"], "test_zero_shot")
  first, last = source.example(0), source.example(len(source) - 1)
  assert first["speaker_id"] != last["speaker_id"]
  for name, ex in (("utterance", first), ("prompt", last)):
    save_wav(tmp_path / f"{name}.wav", ex["audio"].astype(np.float32) / 32768.0, 16000)
  out_dir = tmp_path / "outputs"
  _set_params(kernel_env, {"CODEC_WORKDIR": facodec_run["workdir"],
                           "AUDIO": tmp_path / "utterance.wav",
                           "PROMPT": tmp_path / "prompt.wav", "EVAL_LIMIT": 1, "EVAL_ASR": "none",
                           "EVAL_VC_PAIRS": 1, "EVAL_PROBE_UTTERANCES": 4,
                           "OUTPUT_DIR": out_dir})

  outputs = _execute("codec_colab.ipynb", tmp_path)

  text = _stdout(outputs)
  assert "'kind': 'discrete'" in text and "voice conversion" in text, text
  assert len([h for h in _data(outputs, "text/html") if "<audio" in h]) == 4
  assert os.path.getsize(out_dir / "conversion.wav") > 44
  tables = [m for m in _data(outputs, "text/markdown") if "## Voice conversion" in m]
  assert len(tables) == 1 and "## Disentanglement probes" in tables[0]
