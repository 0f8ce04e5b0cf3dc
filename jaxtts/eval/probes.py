"""Disentanglement probes of a factorized codec (NaturalSpeech 3 §3.2.2 and Table 13's idea:
an attribute should be readable from its own branch and not from the others).

Linear probes are fitted on frozen representations of ``fit_split`` utterances and scored on
``test_split`` utterances (by default ``train`` and ``valid``: the same speakers, unseen
utterances, so a speaker probe can be scored at all):

* phone accuracy, frame by frame (labels from the corpus durations), from the content vectors
  and from the prosody vectors;
* speaker accuracy, utterance by utterance, from the frame-mean of the content vectors and
  from the timbre vector;
* F0 correlation (Pearson, over voiced frames) of a linear regression of per-utterance
  z-scored log F0 on the prosody vectors and on the content vectors.

A branch "holds" an attribute when its probe does far better than the other branch's. Inputs
are standardized with the fitting set's mean and spread; classifiers are multinomial logistic
regressions and the regressor is least squares, both with a small L2 penalty
(``l2``), fitted by full-batch Adam in JAX (`fit_linear_classifier`), the same for every
branch, so the comparison is between representations, not probe capacities.

The codec must provide ``branch_features(audio) -> {"prosody" [F, H], "content" [F, H],
"timbre" [H], ...}`` (`jaxtts.codec.facodec_codec.FACodecCodec`).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtts.audio import f0 as f0_lib
from jaxtts.data import features as features_lib
from jaxtts.data.source import CorpusSource

log = logging.getLogger("jaxtts.eval")


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mean, std = train.mean(0), train.std(0) + 1e-6
  return (train - mean) / std, (test - mean) / std


def fit_linear_classifier(x: np.ndarray, y: np.ndarray, num_classes: int, *, steps: int = 300,
                          learning_rate: float = 0.05, l2: float = 1e-4,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Multinomial logistic regression ``softmax(x W + b)`` on ``x [N, D]``, ``y [N]`` int, by
  full-batch Adam; returns ``(W [D, K], b [K])``."""
  del seed  # zero init: the fit is deterministic
  xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
  params = (jnp.zeros((x.shape[1], num_classes)), jnp.zeros((num_classes,)))
  opt = optax.adam(learning_rate)

  def loss(p):
    logits = xj @ p[0] + p[1]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, yj).mean()
    return ce + l2 * jnp.sum(jnp.square(p[0]))

  @jax.jit
  def fit(p):
    def step(carry, _):
      p, s = carry
      g = jax.grad(loss)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(step, (p, opt.init(p)), None, length=steps)[0][0]

  w, b = fit(params)
  return np.asarray(w), np.asarray(b)


def ridge_regression(x: np.ndarray, y: np.ndarray, l2: float = 1e-4) -> np.ndarray:
  """Least squares with an L2 penalty: ``w [D + 1]`` (last entry the bias) for ``x [N, D]``."""
  a = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
  reg = l2 * len(x) * np.eye(a.shape[1])
  reg[-1, -1] = 0.0
  return np.linalg.solve(a.T @ a + reg, a.T @ y.astype(np.float64))


def _accuracy(x_fit, y_fit, x_test, y_test, num_classes, l2) -> float:
  x_fit, x_test = _standardize(x_fit, x_test)
  w, b = fit_linear_classifier(x_fit, y_fit, num_classes, l2=l2)
  return float(np.mean(np.argmax(x_test @ w + b, axis=1) == y_test))


def _correlation(x_fit, y_fit, x_test, y_test, l2) -> float:
  x_fit, x_test = _standardize(x_fit, x_test)
  w = ridge_regression(x_fit, y_fit, l2)
  pred = x_test @ w[:-1] + w[-1]
  if np.std(pred) == 0 or np.std(y_test) == 0:
    return 0.0
  return float(np.corrcoef(pred, y_test)[0, 1])


def _z_log_f0(f0: np.ndarray, voiced: np.ndarray) -> Optional[np.ndarray]:
  v = voiced & (f0 > 0)
  if v.sum() < 2:
    return None
  lf = np.log(f0[v])
  return (lf - lf.mean()) / max(lf.std(), 0.02)


def collect(codec: Any, source: CorpusSource, limit: int) -> dict[str, Any]:
  """Frozen features and labels of the first ``limit`` utterances of ``source``."""
  frames = {"prosody": [], "content": [], "phone": []}
  voiced_frames = {"prosody": [], "content": [], "z": []}
  utt = {"content_mean": [], "timbre": [], "speaker": []}
  for i in range(min(limit, len(source))):
    ex = source.example(i)
    audio = ex["audio"].astype(np.float32) / 32768.0
    feats = codec.branch_features(audio)
    phones = features_lib.phone_labels(ex["phonemes"], ex["durations"])
    n = min(len(phones), len(feats["content"]))
    frames["prosody"].append(feats["prosody"][:n])
    frames["content"].append(feats["content"][:n])
    frames["phone"].append(phones[:n])
    if "f0" in ex:
      f0, voiced = ex["f0"], ex["voiced"]
    else:
      f0, voiced = f0_lib.compute_f0(audio, codec.sample_rate, codec.hop)
    m = min(len(f0), len(feats["content"]))
    v = voiced[:m] & (f0[:m] > 0)
    z = _z_log_f0(f0[:m], voiced[:m])
    if z is not None:
      voiced_frames["prosody"].append(feats["prosody"][:m][v])
      voiced_frames["content"].append(feats["content"][:m][v])
      voiced_frames["z"].append(z)
    utt["content_mean"].append(feats["content"].mean(0))
    utt["timbre"].append(feats["timbre"])
    utt["speaker"].append(int(ex["speaker_id"]))
  def cat(d):
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in d.items()}

  return {"frames": cat(frames), "voiced": cat(voiced_frames),
          "utterances": {k: np.asarray(v) for k, v in utt.items()}}


def evaluate_probes(codec: Any, corpus_dir: str, *, fit_split: str = "train",
                    test_split: str = "valid", fit_utterances: int = 200,
                    test_utterances: int = 100, l2: float = 1e-4) -> dict[str, Any]:
  """The probe table (module docstring): ``{"table": [{"probe", "branch", "value", "n_fit",
  "n_test"}], "fit_split", "test_split"}``."""
  fit = collect(codec, CorpusSource(corpus_dir, fit_split, sample_rate=codec.sample_rate),
                fit_utterances)
  test = collect(codec, CorpusSource(corpus_dir, test_split, sample_rate=codec.sample_rate),
                 test_utterances)
  table = []
  phones = int(max(fit["frames"]["phone"].max(), test["frames"]["phone"].max())) + 1
  for branch in ("content", "prosody"):
    table.append({"probe": "phone accuracy", "branch": branch,
                  "value": _accuracy(fit["frames"][branch], fit["frames"]["phone"],
                                     test["frames"][branch], test["frames"]["phone"], phones,
                                     l2),
                  "n_fit": int(len(fit["frames"]["phone"])),
                  "n_test": int(len(test["frames"]["phone"]))})
  speakers = int(max(fit["utterances"]["speaker"].max(),
                     test["utterances"]["speaker"].max())) + 1
  chance = float(np.mean(test["utterances"]["speaker"]
                         == np.bincount(fit["utterances"]["speaker"]).argmax()))
  for branch, key in (("timbre", "timbre"), ("content", "content_mean")):
    table.append({"probe": "speaker accuracy", "branch": branch,
                  "value": _accuracy(fit["utterances"][key], fit["utterances"]["speaker"],
                                     test["utterances"][key], test["utterances"]["speaker"],
                                     speakers, l2),
                  "n_fit": int(len(fit["utterances"]["speaker"])),
                  "n_test": int(len(test["utterances"]["speaker"])), "chance": chance})
  for branch in ("prosody", "content"):
    table.append({"probe": "F0 correlation", "branch": branch,
                  "value": _correlation(fit["voiced"][branch], fit["voiced"]["z"],
                                        test["voiced"][branch], test["voiced"]["z"], l2),
                  "n_fit": int(len(fit["voiced"]["z"])), "n_test": int(len(test["voiced"]["z"]))})
  return {"table": table, "fit_split": fit_split, "test_split": test_split}


def markdown(result: dict[str, Any]) -> str:
  lines = [f"| probe | branch | value | fit ({result['fit_split']}) | test "
           f"({result['test_split']}) |", "|---|---|---|---|---|"]
  for r in result["table"]:
    lines.append(f"| {r['probe']} | {r['branch']} | {r['value']:.3f} | {r['n_fit']} | "
                 f"{r['n_test']} |")
  return "\n".join(lines)
