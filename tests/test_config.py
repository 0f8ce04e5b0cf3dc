"""Config presets and `--config.a.b=value` overrides."""

import json

import pytest

from jaxtts.train import config as config_lib

SPEC = "configs/gmm_vae.py:tiny"


def test_presets_load_and_are_locked():
  for preset in ("tiny", "cpu", "espeak", "paper"):
    cfg = config_lib.load_config(f"configs/gmm_vae.py:{preset}")
    assert cfg.task == "gmm_vae"
    with pytest.raises(AttributeError):
      cfg.train.not_a_key = 1
  assert config_lib.load_config("configs/gmm_vae.py:paper").model.decoder_dim == 1536
  assert config_lib.load_config("configs/gmm_vae.py:paper").model.decoder == "dac"
  cpu = config_lib.load_config("configs/gmm_vae.py:cpu")
  assert cpu.model.decoder == "vocos" and cpu.loss.prior_weight == 0.1
  assert cpu.model.excitation and cpu.model.f0_source == "latent"
  assert cpu.model.encoder == "vocos" and config_lib.load_config(
      "configs/gmm_vae.py:paper").model.encoder == "dac"


def test_unknown_preset_names_valid_ones():
  with pytest.raises(ValueError, match="valid presets: tiny, cpu, espeak, paper"):
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


# ------------------------------------------------------------------------------ resuming ----

def _saved(*overrides):
  return json.loads(config_lib.to_json(config_lib.build_config(SPEC, list(overrides))))


def test_resume_allows_schedule_logging_and_hyperparameter_changes():
  saved = _saved()
  cfg = config_lib.build_config(SPEC, [
      "--config.train.steps=999", "--config.train.log_every_steps=3",
      "--config.train.eval_every_steps=7", "--config.checkpoint.every_steps=11",
      "--config.logging.progress_bar=False", "--config.loss.prior_weight=3.0",
      "--config.mesh.fsdp=2", "--config.data.eval_split=test_zero_shot",
      "--config.train.optimizers.generator.learning_rate=0.5",
      "--config.discriminator.start_step=7"])
  refused, allowed = config_lib.resume_changes(saved, cfg)
  assert refused == []
  assert {k for k, _, _ in allowed} == {
      "train.steps", "train.log_every_steps", "train.eval_every_steps",
      "checkpoint.every_steps", "logging.progress_bar", "loss.prior_weight", "mesh.fsdp",
      "data.eval_split", "train.optimizers.generator.learning_rate",
      "discriminator.start_step"}
  assert ("train.steps", 200, 999) in allowed
  assert config_lib.resume_changes(saved, config_lib.build_config(SPEC)) == ([], [])


@pytest.mark.parametrize("override,key,old,new", [
    ("--config.data.segment_samples=3200", "data.segment_samples", 4000, 3200),
    ("--config.data.dir=/elsewhere", "data.dir", None, "/elsewhere"),
    ("--config.data.worker_count=2", "data.worker_count", 0, 2),
    ("--config.model.decoder_dim=24", "model.decoder_dim", 64, 24),
    ("--config.train.seed=5", "train.seed", 0, 5),
    ("--config.train.batch_size=4", "train.batch_size", 8, 4),
    ("--config.train.optimizers.generator.name=adamw", "train.optimizers.generator.name",
     "schedule_free_adamw", "adamw"),
    ("--config.discriminator.mrd_channels=4", "discriminator.mrd_channels", 8, 4),
    ("--config.train.ema_decay=0.9", "train.ema_decay", 0.0, 0.9),
    ("--config.train.optimizers.model.grad_clip_norm=0.0", "train.optimizers.model.grad_clip_norm",
     1.0, 0.0),
])
def test_resume_refuses_data_model_and_state_structure(override, key, old, new):
  spec = "configs/gmm_lm.py:tiny" if "optimizers.model" in override else SPEC
  saved = json.loads(config_lib.to_json(config_lib.build_config(spec)))
  refused, _ = config_lib.resume_changes(saved, config_lib.build_config(spec, [override]))
  assert refused == [(key, old, new)]


def test_resume_on_off_keys_may_change_value():
  saved = _saved("--config.train.ema_decay=0.9")
  refused, allowed = config_lib.resume_changes(
      saved, config_lib.build_config(SPEC, ["--config.train.ema_decay=0.99"]))
  assert refused == [] and allowed == [("train.ema_decay", 0.9, 0.99)]


def test_resume_keys_added_since_are_allowed():
  saved = _saved()
  del saved["train"]["ema_decay"]
  saved["model"]["removed_key"] = 1
  refused, allowed = config_lib.resume_changes(saved, config_lib.build_config(SPEC))
  assert refused == []
  assert [(k, repr(a), repr(b)) for k, a, b in allowed] == [
      ("model.removed_key", "1", "<absent>"), ("train.ema_decay", "<absent>", "0.0")]


def test_check_resume_names_keys_and_both_values(tmp_path):
  (tmp_path / "config.json").write_text(config_lib.to_json(config_lib.build_config(SPEC)))
  cfg = config_lib.build_config(SPEC, ["--config.data.segment_samples=3200",
                                       "--config.train.seed=4", "--config.train.steps=9"])
  with pytest.raises(config_lib.ResumeConfigError) as e:
    config_lib.check_resume(str(tmp_path), cfg)
  msg = str(e.value)
  assert "\n" not in msg
  assert "data.segment_samples (4000 -> 3200)" in msg and "train.seed (0 -> 4)" in msg
  assert "train.steps" not in msg
  assert config_lib.check_resume(str(tmp_path / "fresh"), cfg) == []
