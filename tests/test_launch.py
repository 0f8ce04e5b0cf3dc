"""launch/: the local launcher runs and stops real multi-process trainings, the cloud and SLURM
launchers' dry runs carry the flags multi-host runs need, and sweeps skip what is done."""

import glob
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from conftest import PYTHON, ROOT, subprocess_env
from launch import launcher, sweep
from train_helpers import TINY, losses, overrides, train_cmd

TRAIN = ["--config", "configs/gmm_lm.py:paper", "--workdir", "gs://bucket/gmm_lm"]


def _launch(*argv, timeout=300):
  return subprocess.run([PYTHON, "-m", "launch", *argv], env=subprocess_env(1), cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def _dry(capsys, *argv):
  assert launcher.main([*argv, "--dry-run", "--", *TRAIN]) == 0
  return capsys.readouterr().out


# The local launcher's real two-process run (2 x 4 CPU devices, a sharded mesh, one log per
# process, the losses and parameters of one device) is test_train_resume's
# test_two_processes_on_a_sharded_mesh_match_single_device: one compile for both checks.


FAKE = """
import os, sys, time
pid = sys.argv[sys.argv.index("--process-id") + 1]
mark = os.path.join(sys.argv[sys.argv.index("--workdir") + 1], "attempts-" + pid)
with open(mark, "a") as f:
  f.write("x")
attempts = len(open(mark).read())
if pid == "1" and (MODE == "fail" or attempts == 1):
  sys.exit(7)
if MODE == "fail":
  time.sleep(600)  # a peer left waiting on a collective
"""


def _fake_trainer(tmp_path, mode):
  path = tmp_path / f"fake_{mode}.py"
  path.write_text(f"MODE = {mode!r}\n" + FAKE)
  return f"{sys.executable} {path}"


def test_local_failure_stops_the_rest_and_names_the_process(tmp_path):
  start = time.monotonic()
  proc = _launch("local", "--num-processes", "2", "--kill-timeout", "5",
                 "--trainer", _fake_trainer(tmp_path, "fail"), "--",
                 "--config", TINY, "--workdir", str(tmp_path))
  assert proc.returncode == 7
  assert time.monotonic() - start < 60
  assert "process 1 of 2 exited 7" in proc.stderr
  assert os.path.join(str(tmp_path), "logs", "process_1.log") in proc.stderr


def test_local_retries_resume_after_a_failure(tmp_path):
  proc = _launch("local", "--num-processes", "2", "--retries", "1",
                 "--trainer", _fake_trainer(tmp_path, "retry"), "--",
                 "--config", TINY, "--workdir", str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  assert "retry 1 of 1" in proc.stderr
  assert (tmp_path / "logs" / "process_1.log").read_text().count("attempt ") == 2


def test_local_dry_run_and_flag_errors(capsys):
  out = _dry(capsys, "local", "--num-processes", "2", "--devices-per-process", "4",
             "--log-dir", "/tmp/logs")
  assert "--coordinator-address localhost:PORT --num-processes 2 --process-id 1" in out
  assert "xla_force_host_platform_device_count=4" in out and "/tmp/logs/process_1.log" in out
  assert launcher.main(["local", "--", "--config", TINY]) == 2
  assert "--workdir" in capsys.readouterr().err
  assert launcher.main(["local", "--dry-run", "--", *TRAIN]) == 2  # logs need a local path
  assert "give --log-dir" in capsys.readouterr().err


def test_tpu_vm_dry_run(capsys):
  out = _dry(capsys, "tpu-vm", "--tpu-name", "tts", "--zone", "us-east5-a", "--project", "p",
             "--accelerator-type", "v5p-64", "--spot", "--delete-after")
  lines = [line for line in out.splitlines() if not line.startswith("#")]
  assert "queued-resources create tts --node-id=tts" in out and "--spot" in out
  assert "--runtime-version=" in out and "--accelerator-type=v5p-64" in out
  assert any("tpu-vm scp --recurse" in line and "--worker=all" in line for line in lines)
  assert "lsof -t /dev/accel* /dev/vfio/*" in out and "rm -f /tmp/libtpu_lockfile" in out
  train = [line for line in lines if "jaxtts-train" in line]
  assert len(train) == 1 and "--worker=all" in train[0] and "--distributed" in train[0]
  assert "--workdir gs://bucket/gmm_lm" in train[0] and "logs/tts-$(hostname).log" in train[0]
  assert "Resume key: the workdir gs://bucket/gmm_lm" in out
  assert "queued-resources delete tts" in out
  out = _dry(capsys, "tpu-vm", "--tpu-name", "tts", "--zone", "z", "--create", "tpu-vm")
  assert "tpu-vm create tts" in out and "--version=" in out and "delete" not in out


def test_gke_dry_runs(capsys):
  out = _dry(capsys, "gke", "--cluster", "c1", "--docker-image", "img", "--tpu-type", "v5p-128",
             "--num-slices", "2")
  assert ("xpk workload create --cluster c1 --workload jaxtts-gmm-lm --docker-image img "
          "--tpu-type v5p-128 --num-slices 2 --command") in out
  assert "--workdir gs://bucket/gmm_lm --distributed'" in out
  out = _dry(capsys, "gke", "--format", "jobset", "--docker-image", "img", "--tpu-type",
             "v5p-16", "--tpu-topology", "2x2x2", "--num-slices", "2")
  assert "Resume key: the workdir gs://bucket/gmm_lm" in out
  doc = yaml.safe_load(out)
  assert doc["metadata"]["annotations"] == {
      "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"}
  job = doc["spec"]["replicatedJobs"][0]
  assert job["replicas"] == 2
  spec = job["template"]["spec"]
  assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
  pod = spec["template"]["spec"]
  assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
                                 "cloud.google.com/gke-tpu-topology": "2x2x2"}
  container = pod["containers"][0]
  assert container["resources"]["limits"]["google.com/tpu"] == 4
  assert container["args"][0].endswith("--workdir gs://bucket/gmm_lm --distributed")
  assert {e["name"] for e in container["env"]} >= {"MEGASCALE_NUM_SLICES", "MEGASCALE_SLICE_ID"}


def test_slurm_dry_run_one_task_per_gpu(capsys, tmp_path):
  train = ["--config", TINY, "--workdir", str(tmp_path / "run")]
  assert launcher.main(["slurm", "--nodes", "2", "--gpus-per-node", "4", "--dry-run", "--",
                        *train]) == 0
  out = capsys.readouterr().out
  for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gres=gpu:4",
               "#SBATCH --requeue", "#SBATCH --signal=TERM@300", "#SBATCH --cpus-per-task=8"):
    assert line + "\n" in out
  srun = next(line for line in out.splitlines() if line.startswith("srun "))
  assert f"--output={tmp_path / 'run' / 'logs'}/%j-%t.log" in srun
  assert srun.endswith(f"--workdir {tmp_path / 'run'} --distributed")
  assert "local_device_ids=[SLURM_LOCALID]" in out and f"Resume key: the workdir {tmp_path}" in out
  assert "scontrol requeue" in out
  assert not (tmp_path / "run").exists()  # a dry run writes nothing
  assert launcher.main(["slurm", "--gpus-per-node", "8", "--ntasks-per-node", "1", "--dry-run",
                        "--", *train]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "--ntasks-per-node 1 must equal --gpus-per-node 8" in err


def test_sweep_helpers_and_names():
  grid = sweep.chain(sweep.product(**{"train.seed": [0, 1]}, lr=[1, 2]),
                     sweep.zipit(**{"model.lr": [3, 4], "train.seed": [5, 6]}))
  assert grid[:2] == [{"train.seed": 0, "lr": 1}, {"train.seed": 0, "lr": 2}] and len(grid) == 6
  assert grid[4] == {"model.lr": 3, "train.seed": 5}
  runs = sweep.expand({"config": TINY, "overrides": {"train.steps": 2}, "grid": grid}, "/r")
  assert [r["name"] for r in runs[:2]] == ["000-seed=0-lr=1", "001-seed=0-lr=2"]
  assert runs[4]["name"] == "004-model.lr=3-seed=5"
  assert runs[4]["argv"][-3:] == ["--config.train.steps=2", "--config.model.lr=3",
                                  "--config.train.seed=5"]
  assert runs == sweep.expand({"config": TINY, "overrides": {"train.steps": 2}, "grid": grid},
                              "/r")
  with pytest.raises(sweep.LaunchError, match="one length"):
    sweep.zipit(a=[1], b=[1, 2])


def _sweep(sweep_file, root, *flags):
  return subprocess.run([PYTHON, "-m", "launch.sweep", str(sweep_file), "--root", str(root),
                         *flags], env=subprocess_env(1), cwd=ROOT, capture_output=True,
                        text=True, timeout=400)


def _mtimes(root):
  return {os.path.join(dirpath, p): os.path.getmtime(os.path.join(dirpath, p))
          for dirpath, _, files in os.walk(root)
          for p in files if "checkpoints" in dirpath or p.endswith(".log")}


def test_sweep_runs_skips_done_and_resumes_unfinished(synthetic_corpus, tmp_path):
  # Without discriminators: one compiled step per run (tracing is not cached).
  base = dict(a[len("--config."):].split("=", 1)
              for a in overrides(synthetic_corpus, 2, **{"discriminator.enabled": False}))
  sweep_file = tmp_path / "tiny_sweep.py"
  sweep_file.write_text(textwrap.dedent(f"""
      from launch.sweep import product
      def get_sweep():
        return {{"config": {TINY!r}, "overrides": {base!r},
                 "grid": product(**{{"train.seed": [0, 1], "checkpoint.every_steps": [1, 2]}})}}
      """))
  root = tmp_path / "sweep"
  proc = _sweep(sweep_file, root, "--dry-run")
  assert proc.returncode == 0, proc.stderr
  names = [line.split()[1][:-1] for line in proc.stdout.splitlines() if line.startswith("# 00")]
  assert names == ["000-seed=0-every_steps=1", "001-seed=0-every_steps=2",
                   "002-seed=1-every_steps=1", "003-seed=1-every_steps=2"]
  assert not root.exists()

  proc = _sweep(sweep_file, root, "--only", "0,1", "--parallel", "2")  # half the sweep
  assert proc.returncode == 0, proc.stderr[-3000:]
  first = _mtimes(root)
  proc = _sweep(sweep_file, root, "--parallel", "2")  # resumes only the unfinished half
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((root / "sweep_report.json").read_text())["runs"]
  assert report == {names[0]: "skipped", names[1]: "skipped", names[2]: "done", names[3]: "done"}
  second = _mtimes(root)
  assert {k: second[k] for k in first} == first
  for name in names:
    mark = json.loads((root / name / "sweep_run.json").read_text())
    assert mark["status"] == "done" and mark["overrides"]["data.dir"] == synthetic_corpus
    assert sorted(losses(root / name)) == [1, 2]
  proc = _sweep(sweep_file, root, "--parallel", "2")  # all done: nothing retrains
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count(": skipped") == 4
  assert _mtimes(root) == second


def test_sweep_decides_skip_resume_or_refuse(tmp_path):
  spec = {"config": TINY, "overrides": {"train.steps": 2}, "grid": sweep.product(a=[1, 2])}
  run = sweep.expand(spec, str(tmp_path))[0]
  assert sweep.decide(run, resubmit=False) == "run"
  sweep.write_mark(run, "running")
  os.makedirs(os.path.join(run["workdir"], "checkpoints", "1"))
  assert sweep.decide(run, resubmit=False) == "resume"  # interrupted: resumes
  sweep.write_mark(run, "done", 0)
  assert sweep.decide(run, resubmit=False) == "skip"
  longer = sweep.expand({**spec, "overrides": {"train.steps": 4}}, str(tmp_path))[0]
  assert sweep.decide(longer, resubmit=False) == "resume"  # base overrides changed
  sweep.write_mark(run, "submitted", 0)
  assert sweep.decide(run, resubmit=False) == "skip-submitted"
  assert sweep.decide(run, resubmit=True) == "resume"
  moved = {**sweep.expand({**spec, "grid": sweep.product(a=[2, 1])}, str(tmp_path))[0],
           "workdir": run["workdir"]}
  with pytest.raises(sweep.LaunchError, match="grid changed order"):
    sweep.decide(moved, resubmit=False)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "launch", "sweeps",
                                                               "*.py"))))
def test_example_sweeps_build_their_configs(path):
  from jaxtts.train import config as config_lib  # pylint: disable=import-outside-toplevel
  spec = sweep.load(path)
  runs = sweep.expand(spec, "/tmp/unused", ["--config.data.dir=/data"])
  assert len({r["name"] for r in runs}) == len(runs) > 1
  for run in runs:
    overrides = [a for a in run["argv"] if a.startswith("--config.")]
    config_lib.build_config(os.path.join(ROOT, spec["config"]), overrides)
