"""The device rule (trainables.device) and its config: CPU-side tests of every GPU code path torch allows.

No GPU is needed: bf16 autocast runs on the CPU, the non-resident (host copy per batch) data path is forced,
and the GPU-only branches are checked for their refusals. The fp32 path is pinned bit-for-bit by the
trainables' own determinism tests and by the comparisons here (``precision="fp32"`` equals the default on
a CPU, forced host copies equal resident data).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from orchestrator.config import parse_config
from orchestrator.errors import UserError
from trainables import device as device_mod
from trainables.device import (
    DeviceData,
    autocast,
    cached_on_device,
    channels_last,
    resolve_device,
    resolve_precision,
)

CPU = torch.device("cpu")
GOOD = {
    "name": "t",
    "data": {"dataset": "digits", "max_samples": 300},
    "space": {"d_min": 3, "d_max": 4, "w_min": 8, "w_max": 12, "w_step": 4},
    "searcher": {"name": "random", "num_samples": 2, "epochs": 1},
}


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# -- the rule ------------------------------------------------------------------------------------------


def test_resolve_device_is_the_cpu_unless_a_gpu_is_asked_for() -> None:
    assert resolve_device(False) == CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_asking_for_a_gpu_without_cuda_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"use_gpu=True.*no CUDA device.*gpus_per_trial"):
        resolve_device(True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_is_this_process_local_rank(monkeypatch) -> None:  # pragma: no cover - GPU machines only
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))
    assert resolve_device(True) == torch.device("cuda", 0)


def test_precision_auto_is_bf16_on_a_gpu_and_fp32_on_the_cpu() -> None:
    assert resolve_precision("auto", gpu=True) == "bf16"
    assert resolve_precision("auto", gpu=False) == "fp32"
    assert resolve_precision("bf16", gpu=False) == "bf16"
    assert resolve_precision("fp32", gpu=True) == "fp32"
    with pytest.raises(ValueError, match=r"precision must be one of \['auto', 'fp32', 'bf16'\], but got precision='fp16'"):
        resolve_precision("fp16", gpu=True)


def test_autocast_runs_matmuls_in_bf16_and_fp32_under_a_null_context() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(CPU, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert torch.equal(a @ b, a @ b) and (a @ b).dtype == torch.float32
    with autocast(CPU, "auto"):  # fp32 on the CPU
        assert (a @ b).dtype == torch.float32


def test_resident_data_on_the_cpu_is_not_copied_and_host_copies_give_the_same_batches() -> None:
    x, y = torch.randn(10, 1, 4, 4), torch.arange(10)
    resident = DeviceData(x, y, device=CPU)
    assert resident.resident and resident.home == CPU
    assert resident.tensors[0].data_ptr() == x.data_ptr()  # used as it is
    host = DeviceData(x, y, device=CPU, resident=False)
    index = torch.tensor([7, 2, 5])
    for a, b in zip(resident.take(index), host.take(index)):
        assert torch.equal(a, b)
    share = resident.strided(1, 3)  # rank 1 of 3
    assert len(share) == 3 and torch.equal(share.rows(0, 2)[1], torch.tensor([1, 4]))
    with pytest.raises(ValueError, match=r"tensors of one length, but got lengths \[10, 9\]"):
        DeviceData(x, y[:9], device=CPU)


def test_channels_last_changes_the_layout_only() -> None:
    conv = channels_last(nn.Conv2d(3, 4, 3), True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 5, 5)
    nhwc = channels_last(x, True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc, x)
    assert channels_last(x, False) is x
    flat = torch.randn(3, 4)
    assert channels_last(flat, True) is flat  # not 4-D: as it is


def test_cached_on_device_shares_a_writable_array_and_copies_a_read_only_one() -> None:
    writable = np.ones((2, 3), dtype=np.float32)
    assert cached_on_device(writable, CPU).data_ptr() == writable.ctypes.data
    frozen = np.ones((2, 3), dtype=np.float32)
    frozen.flags.writeable = False
    tensor = cached_on_device(frozen, CPU)
    assert tensor.data_ptr() != frozen.ctypes.data and torch.equal(tensor, torch.ones(2, 3))


# -- every trainable: bf16 runs with a finite loss, fp32 is what it was ---------------------------------


def _digits(n: int = 240) -> SimpleNamespace:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images[:n, None].astype(np.float32) - 8.0) / 8.0
    y = bunch.target[:n].astype(np.int64)
    cut = [int(n * 0.6), int(n * 0.8)]
    splits = [SimpleNamespace(x=a, y=b) for a, b in zip(np.split(x, cut), np.split(y, cut))]
    return SimpleNamespace(train=splits[0], val=splits[1], test=splits[2], num_classes=10, in_channels=1,
                           name="digits-device", dataset_id="digits-device")  # fmt: skip


def test_candidate_in_bf16_and_channels_last_trains_and_fp32_is_the_cpu_default(monkeypatch) -> None:
    from search_algos.spaces.global_space import GlobalArch
    from trainables.classification.train import TrainSettings, fit_candidate

    arch = GlobalArch(depth=3, width=8, ops=("sep", "conv", "sep"), kernels=(3, 5, 3))
    data = _digits()
    plain = fit_candidate(arch, data, TrainSettings(epochs=2, batch_size=32, cutout=3))
    assert fit_candidate(arch, data, TrainSettings(epochs=2, batch_size=32, cutout=3, precision="fp32")) == plain
    for settings in (TrainSettings(epochs=2, batch_size=32, cutout=3, precision="bf16"),
                     TrainSettings(epochs=2, batch_size=32, cutout=3, channels_last=True)):  # fmt: skip
        other = fit_candidate(arch, data, settings)
        assert math.isfinite(other["train_loss"]) and math.isfinite(other["val_loss"])
        assert abs(other["train_loss"] - plain["train_loss"]) < 0.1  # the same training, other arithmetic
    # The host-copy path (a dataset too large for the GPU) trains exactly as resident data does.
    monkeypatch.setattr(device_mod, "fits_on_device", lambda tensors, device, share=0.5: False)
    assert fit_candidate(arch, data, TrainSettings(epochs=2, batch_size=32, cutout=3)) == plain


def test_supernet_one_shot_and_standalone_in_bf16_give_finite_losses() -> None:
    from tests.trainables.alignment.test_train import SPACE, _faces
    from trainables.alignment.train import SupernetSettings, evaluate_child, train_standalone, train_supernet

    faces = _faces(n_train=16, n_val=8, n_test=8)
    states: list[dict] = []
    bf16 = SupernetSettings(epochs=1, batch_size=8, channels=8, precision="bf16", bn_recalibration_batches=1)
    metrics = train_supernet(SPACE, faces, bf16, on_epoch=lambda m, s: states.append(s))
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_nme"])
    from trainables.alignment.model import MultipathSupernet

    net = MultipathSupernet(layers=SPACE.layers, scales=SPACE.scales, channels=8)
    net.load_state_dict(states[-1]["model"])
    child = SPACE.sample(np.random.default_rng(1))
    fp32 = evaluate_child(net, child, faces, "val", recalibration_batches=1, batch_size=8)
    half = evaluate_child(net, child, faces, "val", recalibration_batches=1, batch_size=8, precision="bf16")
    assert math.isfinite(half["val_nme"]) and abs(half["val_nme"] - fp32["val_nme"]) < 0.1 * fp32["val_nme"]
    nhwc = evaluate_child(channels_last(net, True), child, faces, "val", recalibration_batches=1, batch_size=8,
                          nhwc=True)  # fmt: skip
    assert nhwc["val_nme"] == pytest.approx(fp32["val_nme"], rel=1e-4)
    standalone = train_standalone(child, faces, SupernetSettings(epochs=1, batch_size=8, channels=8, precision="bf16"))
    assert math.isfinite(standalone["train_loss"]) and math.isfinite(standalone["test_nme"])


def test_detector_in_bf16_trains_with_a_finite_loss() -> None:
    from search_algos.spaces.detector import DetectorArch, HpoConfig
    from trainables.detection.generator import load_detection_domain
    from trainables.detection.train import fit_detector

    ds = load_detection_domain("large", n_images=20)
    arch = DetectorArch(depths=[1, 1, 2, 3, 2, 1], expands=[4] * 6, kernels=[3] * 6)
    fit = fit_detector(ds, HpoConfig.default(), arch, epochs=1, batch_size=4, width_mult=0.25, precision="bf16",
                       channels_last=True)  # fmt: skip
    assert math.isfinite(fit.train_loss) and 0.0 <= fit.test_ap50 <= 1.0
    with pytest.raises(ValueError, match=r"channels_last must be a bool, got 1; precision must be one of .*got precision='half'"):
        fit_detector(ds, HpoConfig.default(), arch, epochs=1, precision="half", channels_last=1)


def test_settings_refuse_a_bad_precision_and_a_non_bool_layout() -> None:
    from trainables.alignment.train import SupernetSettings
    from trainables.classification.train import TrainSettings

    with pytest.raises(ValueError, match=r"channels_last must be a bool.*precision must be one of"):
        TrainSettings(epochs=1, channels_last="yes", precision="fp16")
    with pytest.raises(ValueError, match=r"precision must be one of"):
        SupernetSettings(epochs=1, precision=None)


# -- config: use_gpu and gpus_per_trial go together; precision resolved into the protocol -----------------


def test_use_gpu_alone_reserves_a_gpu_a_trial_and_gpus_alone_train_on_it() -> None:
    config = parse_config({**GOOD, "training": {"use_gpu": True}})
    assert config.resources.gpus_per_trial == 1 and config.gpus_needed == 1
    config = parse_config({**GOOD, "resources": {"gpus_per_trial": 0.5}})
    assert config.training.use_gpu and config.gpus_needed == 0.5
    config = parse_config({**GOOD, "training": {"use_gpu": True, "train_workers": 2}})
    assert config.gpus_needed == 2  # one GPU per Ray Train worker
    assert parse_config(GOOD).gpus_needed == 0


@pytest.mark.parametrize(
    ("training", "resources", "fragment"),
    [
        ({"use_gpu": True}, {"gpus_per_trial": 0}, "training.use_gpu: true trains every trial on a GPU, but resources.gpus_per_trial: 0"),
        ({"use_gpu": False}, {"gpus_per_trial": 1}, "resources.gpus_per_trial: 1 reserves GPUs, but training.use_gpu: false"),
        ({"precision": "fp16"}, {}, "training.precision: input should be 'auto', 'fp32' or 'bf16'"),
    ],
)
def test_contradicting_gpu_keys_and_bad_precision_are_one_line_each(training, resources, fragment) -> None:
    with pytest.raises(UserError) as caught:
        parse_config({**GOOD, "training": training, "resources": resources}, source="c.yaml")
    assert len(caught.value.problems) == 1 and fragment in caught.value.problems[0], caught.value.problems
    assert caught.value.problems[0].startswith("c.yaml: ")


def test_the_protocol_of_a_plain_run_is_the_one_stored_before_precision_existed() -> None:
    from orchestrator.store import protocol_of

    plain = parse_config(GOOD).training
    before = {"batch_size": 64, "lr": 0.025, "momentum": 0.9, "weight_decay": 3e-4, "cutout": 0,
              "train_workers": 1, "cpus_per_worker": 1.0, "use_gpu": False}  # fmt: skip
    assert plain.protocol() == before
    assert protocol_of({"training": plain.protocol()}) == protocol_of({"training": before})
    assert parse_config({**GOOD, "training": {"precision": "fp32"}}).training.protocol() == before
    gpu = parse_config({**GOOD, "training": {"use_gpu": True}}).training
    assert gpu.protocol() == {**before, "use_gpu": True, "precision": "bf16"}
    nhwc = parse_config({**GOOD, "training": {"precision": "bf16", "channels_last": True}}).training
    assert nhwc.protocol() == {**before, "precision": "bf16", "channels_last": True}


def test_trials_reserve_the_gpus_the_config_asks_for(tmp_path) -> None:
    from orchestrator.evaluate import EvalJob, _settings
    from orchestrator.methods.monas import monas_stages
    from orchestrator.pipeline import _tune_resources

    gpu = parse_config({**GOOD, "training": {"use_gpu": True}})
    assert _tune_resources(gpu.resources.model_dump(), gpu.training.protocol()) == {"cpu": 1.0, "gpu": 1.0}
    job = EvalJob(space="global", data={}, training=gpu.training.protocol(), seed=0, store=None, run="r",
                  stage="s", metric="val_acc", storage_path=str(tmp_path))  # fmt: skip
    settings = _settings(job, 1, job.training, 0)
    assert settings.use_gpu and settings.precision == "bf16"
    plain = parse_config(GOOD)
    assert _settings(job, 1, plain.training.protocol(), 0).precision == "fp32"

    monas = {"name": "m", "data": {"dataset": "faces3d", "n_train": 8, "n_val": 4, "n_test": 4},
             "space": {"name": "multipath", "layers": 3, "scales": 2}, "searcher": {"name": "samos"}}  # fmt: skip
    for raw, gpus, precision in ((monas, 0.0, None), ({**monas, "training": {"use_gpu": True}}, 1.0, "bf16")):
        config = parse_config(raw)
        stages, _select, _extras = monas_stages(config, SimpleNamespace(dataset_id="d"), None, str(tmp_path))
        oneshot = [stage for stage in stages if stage.name.startswith(("search", "random"))]
        assert oneshot and all(stage.resources == {"cpu": 1, "gpu": gpus} for stage in oneshot)
        assert stages[0].job.settings.get("precision") == precision  # absent at fp32: the old identity

    from orchestrator.methods.rnas_mer import rnas_stages

    rnas = {"name": "r", "data": {"dataset": "microexpr", "subjects": 3, "episodes": 3, "frames": 4, "image_size": 16},
            "space": {"name": "rnas"}, "searcher": {"name": "rnas_mer", "seeds": [0, 1]}}  # fmt: skip
    for raw, gpus, precision in ((rnas, 0.0, "fp32"), ({**rnas, "training": {"use_gpu": True}}, 1.0, "bf16")):
        config = parse_config(raw)
        stages, _select, _extras = rnas_stages(config, SimpleNamespace(subjects=np.array([0, 1, 2])), None,
                                               str(tmp_path))  # fmt: skip
        assert {stage.name for stage in stages} >= {"search", "loso"}  # the search seeds and the LOSO folds
        for stage in stages:  # every trial of RNAS-MER (search, folds, baseline 3D CNN) reserves and uses it
            assert stage.resources == {"cpu": 1, "gpu": gpus}, stage.name
            assert (stage.job.use_gpu, stage.job.precision) == (gpus > 0, precision), stage.name


def test_hyperfd_protocol_gains_precision_only_when_not_fp32() -> None:
    from orchestrator.methods.hyperfd.plan import training_protocol

    s = SimpleNamespace(batch_size=8, width_mult=1.0, eval_every=2)
    plain = training_protocol("detector_hpo", s)
    assert "precision" not in plain and training_protocol("detector_hpo", s, precision="fp32") == plain
    assert training_protocol("detector_hpo", s, precision="bf16") == {**plain, "precision": "bf16"}


# -- the CLI: GPUs asked of a cluster without any -------------------------------------------------------


def test_a_gpu_config_on_a_cluster_without_gpus_is_one_line_exit_2_nothing_created(tmp_path, capsys, monkeypatch) -> None:
    import ray
    import yaml

    from orchestrator import runtime
    from orchestrator.cli import main

    started: list[str] = []
    monkeypatch.setattr(runtime, "start_ray", lambda *a, **k: started.append("up") or "local Ray (stub)")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "memory": 1e9})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**GOOD, "training": {"use_gpu": True}}))
    storage = tmp_path / "runs"
    code = main(["run", str(config), "--storage", str(storage)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and started == ["up"]
    assert len(err) == 1, err
    assert err[0].startswith("facenas: training.use_gpu: true with resources.gpus_per_trial: 1 needs 1 GPU(s)")
    assert "the Ray cluster has 0 (CPU 2)" in err[0] and "training.use_gpu: false" in err[0]
    assert not storage.exists()  # refused before the run directory was created


def test_gpus_an_autoscaler_adds_on_demand_pass_the_check(monkeypatch) -> None:
    import ray

    from orchestrator import runtime

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(runtime, "_autoscaler_gpus", lambda: 8.0)  # e.g. clusters/gpu-cluster.yaml, 0-8 GPU nodes
    runtime.check_gpus(2, asked_by="training.use_gpu: true")
    monkeypatch.setattr(runtime, "_autoscaler_gpus", lambda: 0.0)
    with pytest.raises(UserError, match="FACENAS_GPUS_ON_DEMAND=1 when its autoscaler adds them"):
        runtime.check_gpus(2, asked_by="training.use_gpu: true")
    monkeypatch.setenv("FACENAS_GPUS_ON_DEMAND", "1")
    runtime.check_gpus(2, asked_by="training.use_gpu: true")  # the user says GPU nodes will come


@pytest.mark.integration
def test_a_gpu_config_is_refused_by_a_real_local_ray_without_gpus(tmp_path, capsys) -> None:
    import yaml

    from orchestrator.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**GOOD, "resources": {"gpus_per_trial": 1, "num_cpus": 1}}))
    code = main(["run", str(config), "--storage", str(tmp_path / "runs")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "needs 1 GPU(s) a trial, but the Ray cluster has 0" in err[0], err
    assert not (tmp_path / "runs").exists()
