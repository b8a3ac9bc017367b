"""The MONAS multi-path supernet, MNUS training, one-shot evaluation and stand-alone retraining.

Unit tests need neither Ray nor a GPU and generate a tiny alignment set themselves (``_faces``: the
``AlignmentDataset`` layout of ``trainables.alignment.data``); the integration tests train over two Ray Train
workers inside a Tune trial on the local Ray of ``ray_local``.
"""

from __future__ import annotations

import io
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from search_algos.spaces.multipath import (
    EDGE_HPM,
    EDGE_IDENTITY,
    EDGE_NONE,
    MultipathArch,
    MultipathSpace,
    active_edges,
    mnus_children,
)
from trainables.alignment.model import HPMBlock, MultipathSupernet, make_resampler, scale_channels
from trainables.alignment.train import (
    SupernetSettings,
    evaluate_child,
    load_supernet,
    train_standalone,
    train_supernet,
    train_supernet_distributed,
    uv_loss,
)

SPACE = MultipathSpace(layers=4, scales=3)
SIZE = 32


def _split(rng: np.random.Generator, n: int, landmark_uv: np.ndarray, face: np.ndarray) -> SimpleNamespace:
    """``n`` faces: a bright disc whose position and size set a smooth UV map (x, y in pixels, z)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)  # (H, W) each
    centre = rng.uniform(SIZE * 0.35, SIZE * 0.65, size=(n, 2)).astype(np.float32)  # (n, 2) as (x, y)
    scale = rng.uniform(0.5, 0.8, size=n).astype(np.float32)  # (n,)
    x = centre[:, 0, None, None] + scale[:, None, None] * (cols - SIZE / 2)  # (n, H, W)
    y = centre[:, 1, None, None] + scale[:, None, None] * (rows - SIZE / 2)
    z = scale[:, None, None] * np.cos((cols - SIZE / 2) / SIZE * np.pi) * 8
    uv = np.stack([x, y, z], axis=1) * face  # (n, 3, H, W), zero off the face
    disc = ((cols - centre[:, 0, None, None]) ** 2 + (rows - centre[:, 1, None, None]) ** 2) < (
        scale[:, None, None] * SIZE / 2.5
    ) ** 2  # (n, H, W)
    images = np.stack([disc, disc * 0.5, 1 - disc], axis=1).astype(np.float32)
    images += rng.normal(0, 0.05, images.shape).astype(np.float32)
    landmarks = uv[:, :, landmark_uv[:, 0], landmark_uv[:, 1]].transpose(0, 2, 1)  # (n, 68, 3)
    return SimpleNamespace(
        images=images,
        uv_maps=uv.astype(np.float32),
        landmarks=landmarks.astype(np.float32),
        yaw=rng.uniform(-90, 90, size=n).astype(np.float32),
        has_uv=True,
    )


def _faces(n_train: int = 48, n_val: int = 16, n_test: int = 24, seed: int = 0) -> SimpleNamespace:
    """An ``AlignmentDataset``-shaped set of ``SIZE`` x ``SIZE`` images (see ``trainables.alignment.data``)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    face = (((rows - SIZE / 2) / (SIZE * 0.4)) ** 2 + ((cols - SIZE / 2) / (SIZE * 0.35)) ** 2) < 1  # (H, W)
    inside = np.argwhere(face)
    landmark_uv = inside[rng.choice(len(inside), 68, replace=False)].astype(np.int64)  # (68, 2) (row, col)
    weights = np.where(face, 3.0, 0.0).astype(np.float32)
    weights[SIZE // 3 : 2 * SIZE // 3, SIZE // 3 : 2 * SIZE // 3] = 4.0  # "eyes, nose, mouth"
    weights[landmark_uv[:, 0], landmark_uv[:, 1]] = 16.0
    return SimpleNamespace(
        train=_split(rng, n_train, landmark_uv, face),
        val=_split(rng, n_val, landmark_uv, face),
        test=_split(rng, n_test, landmark_uv, face),
        image_size=SIZE,
        uv_weights=weights,
        landmark_uv=landmark_uv,
        dataset_id="faces-test",
        name="faces-test",
    )


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread, as training uses: two threads on a busy 2-core machine run ~10x slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def faces() -> SimpleNamespace:
    return _faces()


def _net(seed: int = 0, channels: int = 8) -> MultipathSupernet:
    torch.manual_seed(seed)
    return MultipathSupernet(layers=SPACE.layers, scales=SPACE.scales, channels=channels)


def _archs(count: int, seed: int = 0) -> list[MultipathArch]:
    """MNUS children and uniform samples: both kinds the supernet must run."""
    rng = np.random.default_rng(seed)
    return mnus_children(SPACE, 4, rng) + [SPACE.sample(rng) for _ in range(count)]


def _edge_params(net: MultipathSupernet) -> dict[str, tuple[int, int, int, str]]:
    """Parameter name -> (l, d_out, d_in, part) for every edge parameter."""
    owner = {}
    for name, _ in net.named_parameters():
        if name.startswith("edges."):
            key, part = name.split(".")[1:3]
            l, o, i = (int(v[1:]) for v in key.split("_"))
            owner[name] = (l, o, i, part)
    return owner


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


def test_hpm_block_splits_channels_half_quarter_quarter_and_adds_the_input() -> None:
    block = HPMBlock(16)
    convs = [block.conv1.conv, block.conv2.conv, block.conv3.conv]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(16, 8), (8, 4), (4, 4)]  # in series
    x = torch.randn(2, 16, 8, 8)
    assert block(x).shape == (2, 16, 8, 8)
    for conv in convs:
        torch.nn.init.zeros_(conv.weight)
    assert torch.equal(block(x), x)  # residual: zero branches give the input back
    with pytest.raises(ValueError, match="multiple of 4"):
        HPMBlock(6)


def test_hpm_block_concatenates_the_three_branch_outputs() -> None:
    block = HPMBlock(8).eval()
    x = torch.randn(1, 8, 6, 6)
    a = block.conv1(x)
    b = block.conv2(a)
    c = block.conv3(b)
    assert torch.equal(block(x), x + torch.cat([a, b, c], 1))


@pytest.mark.parametrize("d_in", range(4))
@pytest.mark.parametrize("d_out", range(4))
def test_resampler_maps_scale_d_in_to_d_out(d_in: int, d_out: int) -> None:
    channels = scale_channels(8, 4)
    assert channels == (8, 16, 32, 64)
    resample = make_resampler(d_in, d_out, channels)
    x = torch.randn(2, channels[d_in], 32 // 2**d_in, 32 // 2**d_in)
    assert resample(x).shape == (2, channels[d_out], 32 // 2**d_out, 32 // 2**d_out)
    strided = [m for m in resample.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == max(0, d_out - d_in)  # one strided 3x3 conv per factor 2 down
    if d_in == d_out:
        assert isinstance(resample, torch.nn.Identity)


def test_channels_double_per_scale_up_to_eight_times_the_base() -> None:
    assert scale_channels(8, 6) == (8, 16, 32, 64, 64, 64)


def test_forward_gives_a_uv_map_for_mnus_children_and_random_archs() -> None:
    net = _net()
    x = torch.randn(2, 3, SIZE, SIZE)
    for arch in _archs(6):
        assert net(x, arch).shape == (2, 3, SIZE, SIZE)
        assert net(x, arch.as_array()).shape == (2, 3, SIZE, SIZE)  # the array works too


def test_forward_rejects_a_wrong_shape_or_image_size() -> None:
    net = _net()
    with pytest.raises(ValueError, match=r"shape \(layers-1, scales, scales\) = \(3, 3, 3\)"):
        net(torch.randn(1, 3, SIZE, SIZE), np.ones((2, 3, 3), dtype=np.int8))
    with pytest.raises(ValueError, match="multiples of 2\\*\\*\\(scales-1\\) = 4"):
        net(torch.randn(1, 3, 30, 30), _archs(0)[0])


def test_only_active_edges_run_and_dead_branches_are_skipped() -> None:
    net = _net()
    calls: dict[tuple[int, int, int, str], int] = {}

    def counter(key: tuple[int, int, int, str]):
        def hook(module, inputs, output) -> None:
            calls[key] = calls.get(key, 0) + 1

        return hook

    for l in range(SPACE.layers - 1):
        for o in range(SPACE.scales):
            for i in range(SPACE.scales):
                edge = net.edges[net.edge_name(l, o, i)]
                edge.resample.register_forward_hook(counter((l, o, i, "resample")))
                edge.hpm.register_forward_hook(counter((l, o, i, "hpm")))
    stem_calls = []
    for d, step in enumerate(net.stem.down, start=1):
        step.register_forward_hook(lambda m, i, o, d=d: stem_calls.append(d))

    checked_dead = 0
    for arch in _archs(10, seed=3):
        calls.clear(), stem_calls.clear()
        net(torch.randn(1, 3, SIZE, SIZE), arch)
        edges, active = arch.as_array(), active_edges(arch)
        expected = {(l, o, i, "resample"): 1 for l, o, i in zip(*np.nonzero(active))}
        expected |= {(l, o, i, "hpm"): 1 for l, o, i in zip(*np.nonzero(active & (edges == EDGE_HPM)))}
        assert calls == expected
        first_inputs = np.nonzero(active[0])[1]
        assert stem_calls == list(range(1, int(first_inputs.max()) + 1))  # only the scales column 0 needs
        checked_dead += int(((edges != EDGE_NONE) & ~active).sum())
    assert checked_dead > 0  # the archs did have dead edges


def test_gradients_reach_only_the_active_edges() -> None:
    net = _net()
    owner = _edge_params(net)
    for arch in _archs(4, seed=5):
        net.zero_grad(set_to_none=True)
        net(torch.randn(2, 3, SIZE, SIZE), arch).square().mean().backward()
        edges, active = arch.as_array(), active_edges(arch)
        for name, param in net.named_parameters():
            if name not in owner:
                continue
            l, o, i, part = owner[name]
            used = bool(active[l, o, i]) and (part == "resample" or edges[l, o, i] == EDGE_HPM)
            assert (param.grad is not None) == used, name
            if used:
                assert param.grad.abs().sum() > 0, name


def test_child_model_equals_the_supernet_with_copied_weights() -> None:
    net = _net()
    x = torch.randn(2, 3, SIZE, SIZE)
    for arch in _archs(3, seed=7):
        child = net.child_model(arch, inherit_weights=True)
        assert torch.equal(child(x), net(x, arch))  # train mode: batch statistics, same order of sums
        net.eval(), child.eval()
        assert torch.equal(child(x), net(x, arch))  # eval mode: the copied running statistics
        net.train()
        active = active_edges(arch)
        n_edges = sum(isinstance(m, torch.nn.Sequential) and isinstance(m[-1], HPMBlock) for m in child.ops)
        assert len(child.ops) == int(active.sum())
        assert n_edges == int((active & (arch.as_array() == EDGE_HPM)).sum())
        assert sum(p.numel() for p in child.parameters()) < sum(p.numel() for p in net.parameters())
        assert net.child_params(arch) == sum(p.numel() for p in child.parameters())  # counted without a copy


def test_child_model_is_freshly_initialised_and_independent_of_the_supernet() -> None:
    net = _net()
    arch = _archs(0)[0]
    torch.manual_seed(1)
    child = net.child_model(arch)
    torch.manual_seed(1)
    again = net.child_model(arch)
    x = torch.randn(2, 3, SIZE, SIZE)
    assert torch.equal(child(x), again(x))  # seeded init
    assert not torch.equal(child(x), net(x, arch))  # not the supernet's weights
    with torch.no_grad():
        next(child.parameters()).add_(1.0)
    assert not torch.equal(next(child.parameters()), next(net.parameters()))  # copies, not shared


def test_child_model_scripts_and_traces() -> None:
    child = _net().child_model(_archs(0)[1], inherit_weights=True).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.jit.optimized_execution(False):  # skip the profiling runs: the test checks semantics
        assert torch.equal(torch.jit.script(child)(x), child(x))
    assert torch.equal(torch.jit.trace(child, x)(x), child(x))


# --------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------


def test_uv_loss_is_the_weighted_mean_squared_error_of_normalised_coordinates() -> None:
    rng = np.random.default_rng(0)
    pred = rng.normal(0.5, 0.2, size=(2, 3, 4, 5))
    target = rng.uniform(0, 32, size=(2, 3, 4, 5))
    weights = rng.choice([0.0, 3.0, 4.0, 16.0], size=(4, 5))
    num = den = 0.0
    for b in range(2):
        for c in range(3):
            for h in range(4):
                for w in range(5):
                    num += weights[h, w] * (pred[b, c, h, w] - target[b, c, h, w] / 32) ** 2
                    den += weights[h, w]
    as_t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    assert float(uv_loss(as_t(pred), as_t(target), as_t(weights), 32)) == pytest.approx(num / den, rel=1e-12)
    assert float(uv_loss(as_t(target / 32), as_t(target), as_t(weights), 32)) == 0.0


# --------------------------------------------------------------------------------------------------
# Supernet training
# --------------------------------------------------------------------------------------------------

TINY = SupernetSettings(epochs=2, batch_size=16, k_children=4, bn_recalibration_batches=2)


def _run(train, *args, **kwargs):
    """A training function, also returning every epoch's metrics and (saved and reloaded) state."""
    history: list[dict] = []
    states: list[dict] = []

    def on_epoch(metrics: dict, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)  # what a checkpoint does; weights_only proves it needs no pickled code
        buffer.seek(0)
        history.append(metrics)
        states.append(torch.load(buffer, weights_only=True))

    final = train(*args, on_epoch=on_epoch, **kwargs)
    return final, history, states


def _without_time(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in ("samples_per_s", "allreduce_s")}


@pytest.fixture(scope="module")
def tiny_run(faces: SimpleNamespace) -> SimpleNamespace:
    final, history, states = _run(train_supernet, SPACE, faces, TINY)
    return SimpleNamespace(final=final, history=history, states=states)


def test_one_mnus_epoch_lowers_the_loss_and_reports_the_contract_keys(faces, tiny_run) -> None:
    before = evaluate_child(_net(TINY.seed), mnus_children(SPACE, 4, np.random.default_rng((0, 0)))[0], faces)
    first = tiny_run.history[0]
    assert set(first) >= {"epoch", "epochs", "train_loss", "val_loss", "val_nme", "samples_per_s", "params"}
    assert first["epoch"] == 1 and first["samples_per_s"] > 0
    assert first["params"] == sum(p.numel() for p in _net().parameters())
    assert first["val_loss"] < 0.5 * before["val_loss"]
    assert tiny_run.history[1]["train_loss"] < first["train_loss"]
    assert first["children_digests"] and first["weights_digests"]


def test_same_seed_gives_identical_weights_and_resume_equals_the_uninterrupted_run(faces, tiny_run) -> None:
    again, _, states = _run(train_supernet, SPACE, faces, TINY)
    assert _without_time(again) == _without_time(tiny_run.final)
    for key, value in tiny_run.states[-1]["model"].items():
        assert torch.equal(value, states[-1]["model"][key]), key

    resumed, history, states = _run(train_supernet, SPACE, faces, TINY, resume_state=tiny_run.states[0])
    assert [m["epoch"] for m in history] == [2]
    assert _without_time(resumed) == _without_time(tiny_run.final)
    for key, value in tiny_run.states[-1]["model"].items():
        assert torch.equal(value, states[-1]["model"][key]), key

    other = train_supernet(SPACE, faces, SupernetSettings(**{**TINY.__dict__, "epochs": 1, "seed": 1}))
    assert other["weights_digests"] != tiny_run.history[0]["weights_digests"]


def test_a_step_updates_only_parameters_some_child_used(faces) -> None:
    """A single-step run: the weights of edges no child of step 0 used are untouched by Adam."""
    data = _faces(n_train=16, n_val=4, n_test=4)
    settings = SupernetSettings(epochs=1, batch_size=16, bn_recalibration_batches=0)
    _, _, states = _run(train_supernet, SPACE, data, settings)
    initial = _net(settings.seed).state_dict()
    used = np.zeros((SPACE.layers - 1, SPACE.scales, SPACE.scales), dtype=bool)
    hpm = np.zeros_like(used)
    for child in mnus_children(SPACE, settings.k_children, np.random.default_rng((settings.seed, 0))):
        used |= active_edges(child)
        hpm |= active_edges(child) & (child.as_array() == EDGE_HPM)
    for name, (l, o, i, part) in _edge_params(_net()).items():
        touched = bool(used[l, o, i]) and (part == "resample" or bool(hpm[l, o, i]))
        assert (not torch.equal(states[0]["model"][name], initial[name])) == touched, name


def test_uniform_sampling_trains_too(faces) -> None:
    settings = SupernetSettings(epochs=1, sampling="uniform", bn_recalibration_batches=1)
    metrics = train_supernet(SPACE, _faces(n_train=16, n_val=4, n_test=4), settings)
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["val_nme"])


def test_a_diverged_loss_raises_floating_point_error() -> None:
    settings = SupernetSettings(epochs=2, lr=1e30, bn_recalibration_batches=0)
    with pytest.raises(FloatingPointError, match=r"^training diverged: train_loss=(nan|inf) at epoch 1$"):
        train_supernet(SPACE, _faces(n_train=32, n_val=4, n_test=4), settings)


def test_tensorboard_scalars_are_written(faces, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = SupernetSettings(epochs=1, bn_recalibration_batches=0)
    train_supernet(SPACE, _faces(n_train=16, n_val=4, n_test=4), settings, tensorboard_dir=str(tmp_path))
    events = EventAccumulator(str(tmp_path)).Reload()
    assert {"supernet/train_loss", "supernet/val_loss", "supernet/val_nme"} <= set(events.Tags()["scalars"])


# --------------------------------------------------------------------------------------------------
# One-shot evaluation, loading, stand-alone training
# --------------------------------------------------------------------------------------------------


def test_evaluate_child_is_deterministic_and_leaves_the_supernet_unchanged(faces, tiny_run) -> None:
    net = _net()
    net.load_state_dict(tiny_run.states[-1]["model"])
    before = {key: value.clone() for key, value in net.state_dict().items()}
    arch_a, arch_b = _archs(1, seed=11)[:2]
    first = evaluate_child(net, arch_a, faces, recalibration_batches=2)
    evaluate_child(net, arch_b, faces, recalibration_batches=2)  # must not leak into the next evaluation
    assert evaluate_child(net, arch_a, faces, recalibration_batches=2) == first
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key  # weights and BN buffers restored
    assert net.training
    assert set(first) == {"val_nme", "val_loss", "nme_by_yaw", "nme_mean", "dense_nme"}
    assert set(first["nme_by_yaw"]) == {"[0,30]", "[30,60]", "[60,90]", "mean"}
    assert first["nme_mean"] == first["nme_by_yaw"]["mean"]
    assert evaluate_child(net, arch_a, faces, recalibration_batches=0) != first  # recalibration matters
    assert set(evaluate_child(net, arch_a, faces, "test")) >= {"test_nme", "test_loss"}


def test_evaluate_child_nme_is_zero_for_a_perfect_prediction(faces) -> None:
    class Oracle(MultipathSupernet):
        def forward(self, x, arch):  # the ground truth of val, normalised
            return torch.as_tensor(faces.val.uv_maps[: len(x)]) / SIZE

    oracle = Oracle(layers=2, scales=1)
    metrics = evaluate_child(oracle, np.ones((1, 1, 1), dtype=np.int8), faces, recalibration_batches=0)
    assert metrics["val_nme"] == 0.0 and metrics["dense_nme"] == 0.0 and metrics["val_loss"] == 0.0


def test_load_supernet_round_trips_a_saved_state(faces, tiny_run, tmp_path) -> None:
    path = tmp_path / "state.pt"
    torch.save(tiny_run.states[-1], path)
    for where in (path, tmp_path):
        net = load_supernet(str(where), SPACE, TINY)
        arch = _archs(0)[0]
        assert evaluate_child(net, arch, faces, recalibration_batches=2)["val_nme"] == pytest.approx(
            evaluate_child(_loaded(tiny_run), arch, faces, recalibration_batches=2)["val_nme"]
        )


def _loaded(run: SimpleNamespace) -> MultipathSupernet:
    net = _net()
    net.load_state_dict(run.states[-1]["model"])
    return net


def test_train_standalone_reports_test_nme_by_yaw_and_resumes_exactly(faces) -> None:
    arch = _archs(0)[2]
    settings = SupernetSettings(epochs=2)
    final, history, states = _run(train_standalone, arch, faces, settings)
    assert [m["epoch"] for m in history] == [1, 2]
    assert "test_nme" not in history[0] and history[1]["val_loss"] < history[0]["val_loss"] * 1.5
    assert set(final) >= {"test_nme", "nme_by_yaw", "nme_mean", "dense_nme", "params", "val_nme"}
    assert set(final["nme_by_yaw"]) == {"[0,30]", "[30,60]", "[60,90]", "mean"}
    torch.manual_seed(0)
    assert final["params"] == sum(p.numel() for p in _net().child_model(arch).parameters())
    resumed = train_standalone(arch, faces, settings, resume_state=states[0])
    assert _without_time(resumed) == _without_time(final)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"k_children": 0}, "k_children must be an integer >= 1"),
        ({"sampling": "greedy"}, r"sampling must be one of \['mnus', 'uniform'\]"),
        ({"channels": 6}, "channels must be a multiple of 4"),
        ({"lr": -1.0}, "lr must be a finite number > 0"),
        ({"batch_size": 15, "num_workers": 2}, "batch_size must be a multiple of num_workers"),
        ({"bn_recalibration_batches": -1}, "bn_recalibration_batches must be an integer >= 0"),
    ],
)
def test_settings_reject_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SupernetSettings(**{"epochs": 1, **kwargs})


def test_settings_defaults_follow_the_paper() -> None:
    settings = SupernetSettings(epochs=1)
    assert (settings.lr, settings.k_children, settings.sampling) == (1e-3, 4, "mnus")


# --------------------------------------------------------------------------------------------------
# Ray Train inside a Tune trial
# --------------------------------------------------------------------------------------------------

DATA_SPEC = {"name": "faces3d", "image_size": SIZE, "n_train": 32, "n_val": 8, "n_test": 8, "seed": 0}
TWO_WORKERS = SupernetSettings(
    epochs=2, batch_size=16, num_workers=2, cpus_per_worker=0.5, bn_recalibration_batches=1
)


@pytest.fixture(scope="module")
def tune_run(ray_local, tmp_path_factory) -> SimpleNamespace:
    """One Tune trial (1 CPU) training the supernet over two Ray Train workers (0.5 CPU each).

    Rank 1 fails once, after training epoch 2 and before its checkpoint, writing the metrics it computed
    (the uninterrupted run's epoch 2) to a marker file; Ray Train restarts both workers from epoch 1.
    One run checks both the normal path and the resume (launching workers costs tens of seconds).
    """
    pytest.importorskip("trainables.alignment.data")
    from ray import tune

    def trial(config: dict) -> None:
        """Defined here so cloudpickle ships it by value: Ray workers cannot import this test module."""
        final = train_supernet_distributed(
            SPACE,
            DATA_SPEC,
            TWO_WORKERS,
            storage_path=config["storage"],
            name="supernet",  # stable per trial: a retried trial resumes
            tensorboard_dir=config["board"],
            _fail_once=(1, 2, config["marker"]),
        )
        tune.report({"final_checkpoint": final["checkpoint_state"], "final": final})

    root = tmp_path_factory.mktemp("tune_run")
    marker = root / "rank1-failed-at-epoch2.json"
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        param_space={"storage": str(root / "train"), "board": str(root / "board"), "marker": str(marker)},
        run_config=tune.RunConfig(name="tune", storage_path=str(root / "tune"), verbose=0),
    )
    grid = tuner.fit()
    return SimpleNamespace(grid=grid, run_dir=root / "train" / "supernet", board=root / "board", marker=marker)


def _checkpoints(run_dir) -> list:
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())


@pytest.mark.integration
def test_tune_trial_trains_over_two_workers_with_identical_children_and_weights(tune_run) -> None:
    assert tune_run.grid.num_errors == 0, tune_run.grid.errors
    epochs = tune_run.grid[0].metrics_dataframe.dropna(subset=["epoch"])
    assert list(epochs["epoch"]) == [1, 2]  # every epoch forwarded to Tune once (the failed one was not)
    for children, weights in zip(epochs["children_digests"], epochs["weights_digests"]):
        assert len(children) == 2 and len(set(children)) == 1  # both workers drew the same children
        assert len(weights) == 2 and len(set(weights)) == 1  # and hold the same weights after the epoch

    checkpoints = _checkpoints(tune_run.run_dir)
    assert len(checkpoints) == 2  # one per epoch
    state = torch.load(checkpoints[-1] / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and set(state) >= {"model", "optimizer", "metrics"}
    final_path = tune_run.grid[0].metrics["final_checkpoint"]
    assert os.path.samefile(final_path, checkpoints[-1] / "state.pt")
    assert load_supernet(final_path, SPACE, TWO_WORKERS).state_dict().keys() == _net().state_dict().keys()
    assert list(tune_run.board.glob("events.out.tfevents.*"))  # rank 0 wrote TensorBoard events


@pytest.mark.integration
def test_a_failed_worker_resumes_from_the_last_checkpoint_bit_identically(tune_run) -> None:
    assert tune_run.marker.exists()  # rank 1 did fail at epoch 2 ...
    failed = json.loads(tune_run.marker.read_text())
    final = tune_run.grid[0].metrics["final"]
    assert final["epoch"] == 2
    # ... and the restarted workers, resumed from the epoch-1 checkpoint, ended exactly where it was
    assert final["weights_digests"] == failed["weights_digests"]
    assert _without_time({**final, "checkpoint_state": None}) == _without_time({**failed, "checkpoint_state": None})
