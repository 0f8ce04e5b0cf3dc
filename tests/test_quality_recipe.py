"""`launch.quality`'s table: issue 12's targets read off the stages' results."""

import pytest

from launch import quality


def _state(codec_wer, gt_wer, lm_wer, lm_gt_wer):
  return {
      "codec_eval": {"table": [{"metric": "wer", "mean": codec_wer},
                               {"metric": "wer_ground_truth", "mean": gt_wer},
                               {"metric": "stoi", "mean": 0.93},
                               {"metric": "pesq_wb", "mean": 2.5}]},
      "zero_shot": {"table": [
          {"system": "gt", "prompt": "3 s", "wer": lm_gt_wer, "sim_prompt": 0.8},
          {"system": "generated", "prompt": "3 s", "wer": lm_wer, "sim_prompt": 0.6},
          {"system": "generated", "prompt": "8 s", "wer": 999.0, "sim_prompt": 0.0}]},
      "durations": {"length_ratio": 0.8},
  }


def test_figures_are_gaps_in_points_and_ratios():
  """The codec report's WERs are fractions and the zero-shot table's are percents: both
  gaps come out in points; the 3 s prompt row is the one compared; the duration error is
  |ratio - 1|."""
  got = quality.figures(_state(0.40, 0.34, 52.0, 35.0))
  assert got["codec_wer_gap"] == pytest.approx(6.0)
  assert got["lm_wer_gap"] == pytest.approx(17.0)
  assert got["lm_sim_ratio"] == pytest.approx(0.75)
  assert got["duration_error"] == pytest.approx(0.2)
  assert got["codec_stoi"] == 0.93 and got["codec_visqol"] is None


def test_table_marks_each_target_met_or_not():
  rows = {line[2:].split(" | ")[0]: line
          for line in quality.table(_state(0.36, 0.34, 45.0, 35.0)).splitlines()[2:]}
  assert rows["codec WER - ground-truth WER (points)"].endswith("| 2.000 | yes |")
  assert rows["codec STOI"].endswith("| 0.930 | yes |")
  assert rows["codec PESQ-wb"].endswith("| 2.500 | no |")
  assert rows["codec ViSQOL"].endswith("| - | - |")
  assert rows["GMM-LM WER - ground-truth WER (points)"].endswith("| 10.000 | yes |")
  assert rows["|free-running / recorded frames per phoneme - 1|"].endswith("| 0.200 | no |")
