"""Config presets and `--config.a.b=value` overrides."""

import pytest

from jaxtts.train import config as config_lib

SPEC = "configs/gmm_vae.py:tiny"


def test_presets_load_and_are_locked():
  for preset in ("tiny", "espeak", "paper"):
    cfg = config_lib.load_config(f"configs/gmm_vae.py:{preset}")
    assert cfg.task == "gmm_vae"
    with pytest.raises(AttributeError):
      cfg.train.not_a_key = 1
  assert config_lib.load_config("configs/gmm_vae.py:paper").model.decoder_dim == 1536


def test_unknown_preset_names_valid_ones():
  with pytest.raises(ValueError, match="valid presets: tiny, espeak, paper"):
    config_lib.load_config("configs/gmm_vae.py:huge")


def test_missing_config_file_is_named():
  with pytest.raises(config_lib.ConfigError, match="configs/nope.py"):
    config_lib.load_config("configs/nope.py:tiny")


def test_overrides_are_typed():
  cfg = config_lib.build_config(SPEC, [
      "--config.train.steps=7", "--config.train.optimizers.generator.learning_rate=1",
      "--config.model.encoder_strides=[2,2]", "--config.data.dir", "/tmp/x",
      "--config.data.speaker_balanced=True", "--config.loss.prior_weight=nan"])
  assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)
  lr = cfg.train.optimizers.generator.learning_rate
  assert lr == 1.0 and isinstance(lr, float)
  assert cfg.model.encoder_strides == (2, 2)
  assert cfg.data.dir == "/tmp/x"
  assert cfg.data.speaker_balanced is True
  assert cfg.loss.prior_weight != cfg.loss.prior_weight  # NaN, for the non-finite tests


def test_typo_lists_valid_keys():
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.build_config(SPEC, ["--config.train.stpes=5"])
  msg = str(e.value)
  assert "stpes" in msg and "under train" in msg and "steps" in msg and "batch_size" in msg


def test_typo_in_section_name():
  with pytest.raises(config_lib.ConfigError, match="no key 'trian' under <root>"):
    config_lib.build_config(SPEC, ["--config.trian.steps=5"])


def test_wrong_type_is_an_error():
  with pytest.raises(config_lib.ConfigError, match="train.steps"):
    config_lib.build_config(SPEC, ["--config.train.steps=many"])


def test_section_override_is_an_error():
  with pytest.raises(config_lib.ConfigError, match="is a section"):
    config_lib.build_config(SPEC, ["--config.train=3"])


def test_unknown_argument():
  with pytest.raises(config_lib.ConfigError, match="--stesp"):
    config_lib.build_config(SPEC, ["--stesp=3"])
