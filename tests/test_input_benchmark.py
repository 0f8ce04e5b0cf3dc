"""benchmarks/input_pipeline.py --config: the derived consumption is the FLOP formula's."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import input_consumption  # pylint: disable=g-import-not-at-top
from jaxtts import tasks
from jaxtts.tasks import flops as flops_lib
from jaxtts.train import config as config_lib


def test_derived_consumption_is_the_flop_formula():
  cfg = config_lib.build_config("configs/gmm_vae.py:tiny")
  task = tasks.get_task(cfg)
  per_host, hosts, seg = 4, 2, int(cfg.data.segment_samples)
  layout = (("audio", (per_host, seg)), ("audio_len", (per_host,)), ("speaker_id", (per_host,)))
  out = input_consumption.derived_consumption(
      task, {layout: 3}, global_batch=per_host * hosts, hosts=hosts,
      accelerators=[("tpu v5p", 4), ("h100", 8)], mfu_assumed=0.5)
  flops = flops_lib.gmm_vae_train_step(cfg, per_host * hosts, seg)
  assert out["kind"] == "derived" and out["flops_per_step"] == pytest.approx(flops)
  for acc, peak, chips in zip(out["accelerators"], (459e12, 989e12), (4, 8)):
    step_s = flops / (hosts * chips * peak * 0.5)
    assert acc["peak_flops_per_chip"] == peak
    assert acc["examples_per_s_per_host"] == pytest.approx(per_host / step_s)
  with pytest.raises(ValueError, match="--accelerator"):
    input_consumption.peak_of("tpu v9")
