"""Config files, presets and `--config.a.b=value` overrides.

A config file is a Python module with `get_config(preset) -> ConfigDict` (locked). It is named
on the command line as `configs/<task>.py[:preset]`. Overrides are type-checked against the
existing value, and a key that does not exist is an error listing the valid keys at that level.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
from typing import Iterable, Sequence

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
