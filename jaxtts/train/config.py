"""Config files, presets and `--config.a.b=value` overrides.

A config file is a Python module with `get_config(preset) -> ConfigDict` (locked). It is named
on the command line as `configs/<task>.py[:preset]`. Overrides are type-checked against the
existing value, and a key that does not exist is an error listing the valid keys at that level.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import os
import sys
from typing import Any, Iterable, Sequence

import ml_collections


class ConfigError(ValueError):
  """A bad config path, preset or override."""


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/file.py[:preset]` and returns its locked config."""
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config: no such config file {path!r}")
  # Configs import `configs.base`; make the repository root importable when run from a clone.
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:
    sys.path.insert(0, root)
  mod_spec = importlib.util.spec_from_file_location(
      f"_jaxtts_config_{abs(hash(os.path.abspath(path)))}", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config: {path} defines no get_config(preset)")
  cfg = module.get_config(preset) if preset else module.get_config()
  cfg.lock()
  return cfg


def _parse_value(text: str, current):
  if isinstance(current, str) or current is None:
    try:
      value = ast.literal_eval(text)
      return value if current is None else text
    except (ValueError, SyntaxError):
      return text
  if isinstance(current, float) and text.strip().lower() in ("nan", "inf", "-inf", "+inf"):
    return float(text)
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if isinstance(current, bool) and text.lower() in ("true", "false"):
      return text.lower() == "true"
    raise ConfigError(f"cannot parse {text!r} as a {type(current).__name__}") from None
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  return value


def apply_override(cfg: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets `cfg.<key> = text` parsed as the type of the existing value."""
  names = key.split(".")
  leaf = names[-1]
  node, parent, walked = cfg, cfg, []
  for name in names:
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise ConfigError(f"--config.{key}: no key {name!r} under {'.'.join(walked) or '<root>'}; "
                        f"valid keys: {', '.join(valid)}")
    parent, node = node, node[name]
    walked.append(name)
  current = node
  if isinstance(current, ml_collections.ConfigDict):
    raise ConfigError(f"--config.{key} is a section; override one of its keys: "
                      f"{', '.join(sorted(current.keys()))}")
  try:
    value = _parse_value(text, current)
    if current is None:
      with parent.ignore_type():
        parent[leaf] = value
    else:
      parent[leaf] = value
  except (TypeError, ValueError) as e:
    raise ConfigError(f"--config.{key}={text}: {e}") from None


def parse_overrides(argv: Iterable[str]) -> list[tuple[str, str]]:
  """Splits `--config.a.b=v` / `--config.a.b v` arguments into (key, text) pairs."""
  out, argv = [], list(argv)
  i = 0
  while i < len(argv):
    arg = argv[i]
    if not arg.startswith("--config."):
      raise ConfigError(f"unknown argument {arg!r}")
    body = arg[len("--config."):]
    if "=" in body:
      key, text = body.split("=", 1)
    else:
      if i + 1 >= len(argv):
        raise ConfigError(f"{arg} needs a value")
      key, text = body, argv[i + 1]
      i += 1
    out.append((key, text))
    i += 1
  return out


def build_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  cfg = load_config(spec)
  for key, text in parse_overrides(overrides):
    apply_override(cfg, key, text)
  return cfg


def to_json(cfg: ml_collections.ConfigDict) -> str:
  return json.dumps(cfg.to_dict(), indent=1, sort_keys=True, default=str)


# ------------------------------------------------------------------------------ resuming ----

class ResumeConfigError(ConfigError):
  """A resume whose config changes keys an exact resume needs unchanged."""


# Keys (fnmatch patterns over dotted names) a resume may not change: the data stream, the model
# and the shape of the train state. Everything else (train.steps, intervals, logging, loss
# weights, learning rates, the mesh) may change; the changes are logged.
RESUME_FIXED = ("task", "data.*", "model.*", "alignment.*", "discriminator.*", "train.seed",
                "train.batch_size", "train.ema_groups", "train.optimizers.*.name")
# ...unless they match one of these (evaluation-only data keys, GAN loss hyperparameters).
RESUME_FREE = ("data.eval_split", "discriminator.start_step", "discriminator.adversarial_weight",
               "discriminator.feature_matching_weight", "discriminator.loss",
               "alignment.temperature_*",
               "alignment.anneal_start_fraction")
# Keys that may change value but not switch between zero (off) and non-zero (on): either side
# of the switch has another train-state tree (an EMA, a clipping stage in the optimizer chain).
RESUME_ON_OFF = ("train.ema_decay", "train.optimizers.*.grad_clip_norm")


class _Missing:
  """A key one side of a comparison does not have."""

  def __repr__(self):
    return "<absent>"


MISSING = _Missing()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists and values are leaves)."""
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out.update(flatten(v, name + "."))
    else:
      out[name] = v
  return out


def _matches(key: str, patterns: Sequence[str]) -> bool:
  return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def resume_changes(saved: dict, cfg: ml_collections.ConfigDict
                   ) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
  """Compares a workdir's config.json (``saved``, parsed) with ``cfg``.

  Returns ``(refused, allowed)`` lists of ``(key, saved value, new value)``; a key absent on
  one side has the value `MISSING` there. Keys absent from ``saved`` (added to the code since
  the workdir was written) and keys the code no longer has are allowed: the checkpoint's own
  shape check (`jaxtts.train.checkpoint.check_compatible`) still refuses a state they change.
  """
  old, new = flatten(saved), flatten(json.loads(to_json(cfg)))
  refused, allowed = [], []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, MISSING), new.get(key, MISSING)
    if a == b:
      continue
    if a is MISSING or b is MISSING:
      allowed.append((key, a, b))
    elif _matches(key, RESUME_ON_OFF):
      (refused if bool(a) != bool(b) else allowed).append((key, a, b))
    elif _matches(key, RESUME_FIXED) and not _matches(key, RESUME_FREE):
      refused.append((key, a, b))
    else:
      allowed.append((key, a, b))
  return refused, allowed


def _show(value: Any) -> str:
  return "<absent>" if value is MISSING else json.dumps(value)


def describe_changes(changes: Sequence[tuple[str, Any, Any]]) -> str:
  return ", ".join(f"{k} ({_show(a)} -> {_show(b)})" for k, a, b in changes)


def check_resume(workdir: str, cfg: ml_collections.ConfigDict) -> list[tuple[str, Any, Any]]:
  """Raises `ResumeConfigError` (one line: the keys, with the workdir's and the new values)
  when ``cfg`` changes a key `RESUME_FIXED` names against ``workdir/config.json``; returns the
  allowed changes. No config.json: nothing to compare (returns [])."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  refused, allowed = resume_changes(saved, cfg)
  if refused:
    raise ResumeConfigError(
        f"cannot resume {workdir}: the config changes keys an exact resume needs unchanged "
        f"(config.json value -> new value): {describe_changes(refused)}; resume with the "
        f"values in {path} or train in a fresh --workdir")
  return allowed
