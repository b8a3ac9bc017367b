"""The global CNN and candidate training (Efficient Global NAS, §3.1 and §4.1).

Unit tests need neither Ray nor a GPU and build small digits datasets themselves; the integration tests
run a Tune trial that trains over two Ray Train workers on the local Ray of ``ray_local``.
"""

from __future__ import annotations

import io
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from search_algos.spaces.global_space import KERNELS, OPS, GlobalArch, GlobalSpace, count_params, layer_plan
from trainables.classification.model import build_global_cnn
from trainables.classification.train import TrainSettings, _cutout, _epoch_plan, fit_candidate, fit_candidate_distributed

SMALL = GlobalArch(depth=3, width=8, ops=("sep", "conv", "sep"), kernels=(3, 5, 3))


def _split(x: np.ndarray, y: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(x=x, y=y)


def _digits(n: int = 600, seed: int = 0) -> SimpleNamespace:
    """An ImageDataset-shaped digits set: 60/20/20 split of ``n`` scikit-learn digits, standardised."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rows = np.random.default_rng(seed).permutation(len(bunch.target))[:n]
    x = (bunch.images[rows, None] / 16.0).astype(np.float32)  # (n, 1, 8, 8)
    x = (x - x.mean()) / x.std()
    y = bunch.target[rows].astype(np.int64)
    a, b = int(0.6 * n), int(0.8 * n)
    return SimpleNamespace(
        train=_split(x[:a], y[:a]),
        val=_split(x[a:b], y[a:b]),
        test=_split(x[b:], y[b:]),
        num_classes=10,
        in_channels=1,
        image_size=(8, 8),
        name="digits-test",
        dataset_id="digits-test",
    )


@pytest.fixture(scope="module")
def digits() -> SimpleNamespace:
    return _digits()


def _run(arch: GlobalArch, data: SimpleNamespace, settings: TrainSettings, **kwargs):
    """fit_candidate, also returning every epoch's metrics and (saved and reloaded) state."""
    history: list[dict] = []
    states: list[dict] = []

    def on_epoch(metrics: dict, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)  # what a checkpoint does; weights_only proves it needs no pickled code
        buffer.seek(0)
        history.append(metrics)
        states.append(torch.load(buffer, weights_only=True))

    final = fit_candidate(arch, data, settings, on_epoch=on_epoch, **kwargs)
    return final, history, states


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


def test_params_equal_count_params_and_logits_shape_over_random_archs() -> None:
    space = GlobalSpace(d_min=1, d_max=9, w_min=2, w_max=20, w_step=2)
    rng = np.random.default_rng(0)
    for i in range(50):
        arch = space.sample(rng)
        in_channels, num_classes = (1, 10) if i % 2 else (3, 7)
        model = build_global_cnn(arch, in_channels=in_channels, num_classes=num_classes)
        built = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert built == count_params(arch, in_channels=in_channels, num_classes=num_classes), arch.summary()
        if in_channels == 1:  # digits (8x8) and LFW (25x25) sized inputs
            model.eval()
            for size in (8, 25):
                assert model(torch.randn(2, 1, size, size)).shape == (2, num_classes)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_every_op_and_kernel_runs_forward_and_backward(op: str, kernel: int) -> None:
    model = build_global_cnn(GlobalArch.uniform(4, 6, op, kernel), in_channels=1, num_classes=5)
    logits = model(torch.randn(3, 1, 8, 8))  # (B, num_classes)
    assert logits.shape == (3, 5)
    logits.logsumexp(dim=1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    layer = model.features[1]  # 6 -> 12 channels
    if op == "sep":  # depthwise (groups = c_in) then pointwise 1x1, no biases
        assert layer.depthwise.groups == 6 and layer.depthwise.kernel_size == (kernel, kernel)
        assert layer.pointwise.kernel_size == (1, 1) and layer.pointwise.bias is None
    else:
        assert layer.conv.kernel_size == (kernel, kernel) and layer.conv.bias is None


def test_layers_follow_layer_plan() -> None:
    arch = GlobalArch.uniform(7, 4, "conv", 5)
    model = build_global_cnn(arch, in_channels=3, num_classes=4)
    x = torch.randn(2, 3, 25, 25)  # (B, C, H, W)
    size, expected = 25, []
    for _c_in, c_out, stride, _op, _kernel in layer_plan(arch, 3):
        size = (size + stride - 1) // stride  # "same" padding: ceil(H / stride)
        expected.append((c_out, size, size))
    shapes = []
    for layer in model.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == expected
    assert [s[0] for s in shapes] == [4, 4, 8, 8, 16, 16, 16]  # doubling at 1/3 and 2/3 of the depth


def test_torchscript_matches_eager() -> None:
    model = build_global_cnn(SMALL, in_channels=1, num_classes=10).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(4, 1, 25, 25)
    torch.testing.assert_close(scripted(x), model(x))


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def test_fit_learns_digits_and_reports_the_contract_keys() -> None:
    arch = GlobalArch.uniform(3, 16)
    final, history, _ = _run(arch, _digits(n=1797), TrainSettings(epochs=3))  # 17 steps an epoch
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert history[-1] == final
    assert final["val_acc"] > 30.0  # chance is 10 %
    for m in history:
        assert 0.0 <= m["val_acc"] <= 100.0 and m["epochs"] == 3
        assert m["params"] == count_params(arch, in_channels=1, num_classes=10)
        assert math.isfinite(m["train_loss"]) and math.isfinite(m["val_loss"])
        assert ("test_acc" in m) == (m["epoch"] == 3)  # test: once, at the end
    assert 0.0 <= final["test_acc"] <= 100.0


def test_same_seed_gives_bit_identical_metrics_and_another_seed_does_not(digits: SimpleNamespace) -> None:
    settings = TrainSettings(epochs=2, cutout=3)
    _, first, _ = _run(SMALL, digits, settings)
    torch.manual_seed(1234)  # global torch RNG state must not matter
    _, second, _ = _run(SMALL, digits, settings)
    assert first == second
    _, other, _ = _run(SMALL, digits, TrainSettings(epochs=2, cutout=3, seed=1))
    assert other != first


def test_resume_from_epoch_k_equals_the_uninterrupted_run(digits: SimpleNamespace) -> None:
    settings = TrainSettings(epochs=3, cutout=3)
    final, history, states = _run(SMALL, digits, settings)
    assert set(states[0]) >= {"epoch", "model", "optimizer", "scheduler"}
    for k in (1, 2):
        resumed_final, resumed, resumed_states = _run(SMALL, digits, settings, resume_state=states[k - 1])
        assert resumed == history[k:]
        assert resumed_final == final
        for name, tensor in states[-1]["model"].items():
            assert torch.equal(resumed_states[-1]["model"][name], tensor), name
    # A state saved after the final epoch has nothing left to train: its metrics are the result.
    assert fit_candidate(SMALL, digits, settings, resume_state=states[-1]) == final


def test_resume_state_from_another_schedule_is_refused(digits: SimpleNamespace) -> None:
    _, _, states = _run(SMALL, digits, TrainSettings(epochs=2))
    with pytest.raises(ValueError, match="another schedule"):
        fit_candidate(SMALL, digits, TrainSettings(epochs=3), resume_state=states[0])
    with pytest.raises(ValueError, match="lacks"):
        fit_candidate(SMALL, digits, TrainSettings(epochs=2), resume_state={"epoch": 1})


def test_learning_rate_follows_the_cosine_schedule_to_zero(digits: SimpleNamespace) -> None:
    settings = TrainSettings(epochs=2, lr=0.1)
    _, _, states = _run(SMALL, digits, settings)
    steps = states[0]["scheduler"]["last_epoch"]  # steps per epoch: ceil(360 / 64) = 6
    assert steps == 6
    lr_after_epoch_1 = states[0]["optimizer"]["param_groups"][0]["lr"]
    assert lr_after_epoch_1 == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 6 / 12)))
    assert states[1]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    group = states[0]["optimizer"]["param_groups"][0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 3e-4)


def test_non_finite_train_loss_raises_floating_point_error(digits: SimpleNamespace) -> None:
    poisoned = SimpleNamespace(**vars(digits))
    x = digits.train.x.copy()
    x[0, 0, 0, 0] = np.nan
    poisoned.train = _split(x, digits.train.y)
    with pytest.raises(FloatingPointError, match=r"^training diverged: train_loss=nan at epoch 1$"):
        fit_candidate(SMALL, poisoned, TrainSettings(epochs=2))
    with pytest.raises(FloatingPointError, match=r"^training diverged: train_loss=(nan|-?inf) at epoch \d$"):
        fit_candidate(SMALL, digits, TrainSettings(epochs=2, lr=1e9))


def test_epoch_plan_is_a_fresh_permutation_per_epoch_split_across_ranks() -> None:
    settings = TrainSettings(epochs=2, seed=3)
    whole, _ = _epoch_plan(11, (8, 8), settings, 1, SimpleNamespace(rank=0, world=1))
    assert sorted(whole) == list(range(11))
    again, _ = _epoch_plan(11, (8, 8), settings, 1, SimpleNamespace(rank=0, world=1))
    nxt, _ = _epoch_plan(11, (8, 8), settings, 2, SimpleNamespace(rank=0, world=1))
    assert np.array_equal(whole, again) and not np.array_equal(whole, nxt)
    shards = [_epoch_plan(11, (8, 8), settings, 1, SimpleNamespace(rank=r, world=2))[0] for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5  # cut to a multiple of the world size
    assert np.array_equal(np.stack(shards, axis=1).ravel(), whole[:10])  # interleaved: global batches


def test_cutout_zeroes_a_clipped_square_per_image() -> None:
    x = torch.ones(2, 3, 6, 6)
    out = _cutout(x, torch.tensor([[2, 3], [0, 5]]), size=3)
    expected = torch.ones(2, 3, 6, 6)
    expected[0, :, 1:4, 2:5] = 0  # centred at (2, 3)
    expected[1, :, 0:2, 4:6] = 0  # centred at the corner (0, 5): clipped
    assert torch.equal(out, expected)


def test_train_settings_defaults_are_the_papers() -> None:
    s = TrainSettings(epochs=10)
    assert (s.batch_size, s.lr, s.momentum, s.weight_decay, s.cutout) == (64, 0.025, 0.9, 3e-4, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1, but got epochs=0"),
        ({"epochs": 2.0}, "epochs=2.0"),
        ({"epochs": 1, "lr": 0}, "lr must be a finite number > 0, but got lr=0"),
        ({"epochs": 1, "lr": float("nan")}, "lr=nan"),
        ({"epochs": 1, "momentum": 1.0}, "momentum must be a finite number in [0, 1)"),
        ({"epochs": 1, "weight_decay": -1e-4}, "weight_decay=-0.0001"),
        ({"epochs": 1, "cutout": -1}, "cutout must be an integer >= 0"),
        ({"epochs": 1, "seed": -1}, "seed=-1"),
        ({"epochs": 1, "num_workers": 0}, "num_workers=0"),
        ({"epochs": 1, "cpus_per_worker": 0}, "cpus_per_worker=0"),
        ({"epochs": 1, "threads": 0}, "threads=0"),
        ({"epochs": 1, "use_gpu": 1}, "use_gpu must be a bool"),
        ({"epochs": 1, "batch_size": 64, "num_workers": 3}, "use e.g. batch_size=63"),
    ],
)
def test_train_settings_reject_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match="invalid TrainSettings") as info:
        TrainSettings(**kwargs)
    assert message in str(info.value)


def test_train_settings_report_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as info:
        TrainSettings(epochs=0, lr=-1.0, threads=0)
    assert all(name in str(info.value) for name in ("epochs=0", "lr=-1.0", "threads=0"))


# --------------------------------------------------------------------------------------------------
# Ray Train inside a Tune trial
# --------------------------------------------------------------------------------------------------

DIGITS_SPEC = {"name": "digits"}
TWO_WORKERS = TrainSettings(epochs=2, num_workers=2, cpus_per_worker=0.5)


ARCH = GlobalArch.uniform(3, 16)


@pytest.fixture(scope="module")
def tune_run(ray_local, tmp_path_factory) -> SimpleNamespace:
    """One Tune trial (1 CPU) that trains ARCH over two Ray Train workers (0.5 CPU each)."""
    pytest.importorskip("trainables.classification.data")
    from ray import tune

    def trial(config: dict) -> None:
        """Defined here so cloudpickle ships it by value: Ray workers cannot import this test module."""
        fit_candidate_distributed(
            GlobalArch.from_dict(config["arch"]),
            DIGITS_SPEC,
            TWO_WORKERS,
            storage_path=config["storage"],
            name=f"candidate-{config['arch_key']}",  # stable per trial: a retried trial resumes
        )

    root = tmp_path_factory.mktemp("tune_run")
    storage = str(root / "train")
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        param_space={"arch": ARCH.to_dict(), "arch_key": ARCH.key(), "storage": storage},
        run_config=tune.RunConfig(name="tune", storage_path=str(root / "tune"), verbose=0),
    )
    run_dir = root / "train" / f"candidate-{ARCH.key()}"
    return SimpleNamespace(grid=tuner.fit(), run_dir=run_dir)


@pytest.mark.integration
def test_tune_trial_trains_over_two_ray_train_workers(tune_run: SimpleNamespace) -> None:
    assert tune_run.grid.num_errors == 0, tune_run.grid.errors
    metrics = tune_run.grid[0].metrics
    assert metrics["epoch"] == 2 and metrics["params"] == count_params(ARCH, in_channels=1, num_classes=10)
    assert metrics["val_acc"] > 20.0  # chance is 10 %
    assert list(tune_run.grid[0].metrics_dataframe["epoch"]) == [1, 2]  # every epoch was forwarded to Tune

    checkpoints = sorted(p for p in tune_run.run_dir.glob("checkpoint_*") if p.is_dir())
    assert len(checkpoints) == 2  # one per epoch, with fit_candidate's state layout
    state = torch.load(checkpoints[-1] / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and set(state) >= {"model", "optimizer", "scheduler"}
    assert not any(key.startswith("module.") for key in state["model"])  # unwrapped from DDP


@pytest.mark.integration
def test_worker_failure_resumes_from_the_last_checkpoint_bit_identically(tune_run, tmp_path) -> None:
    marker = tmp_path / "failed-once"

    def fail_once(metrics: dict, state: dict) -> None:
        """Kill rank 0 once, after it trained epoch 2 but before that epoch's checkpoint."""
        if metrics["epoch"] == 2 and not marker.exists():
            marker.touch()
            raise RuntimeError("injected worker failure")

    resumed = fit_candidate_distributed(
        ARCH, DIGITS_SPEC, TWO_WORKERS, storage_path=str(tmp_path), name="fails-once", on_epoch=fail_once
    )
    assert marker.exists()  # Ray Train restarted both workers from the epoch-1 checkpoint ...
    uninterrupted = tune_run.grid[0].metrics
    assert resumed == {key: uninterrupted[key] for key in resumed}  # ... and ended where the trial did


@pytest.mark.integration
def test_distributed_divergence_raises_and_leaves_a_terminal_checkpoint(ray_local, tmp_path) -> None:
    pytest.importorskip("trainables.classification.data")
    settings = TrainSettings(epochs=2, lr=1e9, num_workers=2, cpus_per_worker=0.5)
    spec = {"name": "digits", "max_samples": 300}
    with pytest.raises(FloatingPointError, match=r"^training diverged: train_loss=nan at epoch 1$"):
        fit_candidate_distributed(
            GlobalArch.uniform(3, 8), spec, settings, storage_path=str(tmp_path), name="nan"
        )
    (checkpoint,) = (p for p in (tmp_path / "nan").glob("checkpoint_*") if p.is_dir())
    assert (checkpoint / "diverged.txt").read_text() == "training diverged: train_loss=nan at epoch 1"
