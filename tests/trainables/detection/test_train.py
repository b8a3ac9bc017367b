"""The HyperFD detector: model shapes and gradients, anchors, matching, loss, augmentation, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search_algos.spaces.detector import DetectorArch, DetectorNasSpace, HpoConfig
from trainables.detection.data import DetectionDataset, DetectionSplit
from trainables.detection.generator import load_detection_domain
from trainables.detection.model import FaceDetector, decode_boxes, encode_boxes, make_anchors
from trainables.detection.train import augment_batch, detection_loss, fit_detector, match_anchors

torch.set_num_threads(1)

_ARCHS = [
    DetectorArch(depths=[1, 1, 2, 3, 2, 1], expands=[4] * 6, kernels=[3] * 6),  # smallest
    DetectorArch.mobilenet_v2(),
    DetectorArch(depths=[3, 3, 4, 4, 4, 1], expands=[6] * 6, kernels=[7] * 6),  # largest
    *[DetectorNasSpace().sample(np.random.default_rng(s)) for s in range(2)],
]


@pytest.mark.parametrize("arch", _ARCHS, ids=lambda a: a.summary().replace(" ", "_"))
def test_forward_backward_every_arch(arch):
    torch.manual_seed(0)
    model = FaceDetector(arch, image_size=64, width_mult=0.25)
    logits, offsets = model(torch.rand(2, 3, 64, 64))
    n = (8 * 8 + 4 * 4) * 3  # stride-8 and stride-16 levels, 3 anchors per position
    assert logits.shape == (2, n) and offsets.shape == (2, n, 4) and model.anchors.shape == (n, 4)
    assert model.strides == (8, 16)
    faces = [torch.tensor([[10.0, 12.0, 30.0, 36.0]]), torch.zeros(0, 4)]
    loss, parts = detection_loss(logits, offsets, model.anchors, faces, HpoConfig.default())
    loss.backward()
    assert math.isfinite(loss.item()) and parts["positives"] >= 1
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads[:3])  # the stem learns


def test_model_depth_follows_the_encoding():
    small, large = (FaceDetector(a, width_mult=0.25) for a in (_ARCHS[0], _ARCHS[2]))
    assert len(small.blocks) == 1 + sum(_ARCHS[0].depths) and len(large.blocks) == 1 + sum(_ARCHS[2].depths)
    assert sum(p.numel() for p in large.parameters()) > sum(p.numel() for p in small.parameters())
    kernels = {m.kernel_size[0] for m in large.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1}
    assert 7 in kernels


def test_anchors_by_hand():
    anchors = make_anchors(64, (8, 16))
    assert anchors.shape == (240, 4)
    # First position of the stride-8 level: centre (4, 4), heights 8, 12, 17.92, width 0.87 x height.
    first = anchors[0]
    assert first.tolist() == pytest.approx([4 - 3.48, 0.0, 4 + 3.48, 8.0])
    # First anchor of the stride-16 level: centre (8, 8), height 25.6.
    assert anchors[8 * 8 * 3].tolist() == pytest.approx([8 - 0.87 * 12.8, 8 - 12.8, 8 + 0.87 * 12.8, 8 + 12.8])


def test_encode_decode_round_trip():
    anchors = make_anchors(64, (8, 16))[:50]
    boxes = anchors + torch.tensor([1.0, -2.0, 3.0, 0.5])
    np.testing.assert_allclose(decode_boxes(encode_boxes(boxes, anchors), anchors), boxes, atol=1e-4)


def _naive_match(anchors: np.ndarray, faces: np.ndarray, pos: float, neg: float) -> np.ndarray:
    labels = []
    ious = np.zeros((len(anchors), len(faces)))
    for i, a in enumerate(anchors):
        for j, f in enumerate(faces):
            iw = max(0.0, min(a[2], f[2]) - max(a[0], f[0]))
            ih = max(0.0, min(a[3], f[3]) - max(a[1], f[1]))
            inter = iw * ih
            ious[i, j] = inter / ((a[2] - a[0]) * (a[3] - a[1]) + (f[2] - f[0]) * (f[3] - f[1]) - inter)
        best = ious[i].max()
        labels.append(1 if best >= pos else (0 if best < neg else -1))
    for j in range(len(faces)):
        labels[int(np.argmax(ious[:, j]))] = 1
    return np.array(labels)


@pytest.mark.parametrize("iou_pos", [0.4, 0.5, 0.6])
def test_matching_against_a_naive_loop(iou_pos):
    anchors = make_anchors(64, (8, 16))
    rng = np.random.default_rng(int(iou_pos * 10))
    xy = rng.uniform(0, 40, size=(4, 2))
    faces = np.column_stack([xy, xy + rng.uniform(6, 24, size=(4, 2))]).astype(np.float32)
    iou_neg = iou_pos / 2 + 0.05
    labels, _target = match_anchors(anchors, torch.from_numpy(faces), iou_pos, iou_neg)
    expected = _naive_match(anchors.double().numpy(), faces.astype(np.float64), iou_pos, iou_neg)
    np.testing.assert_array_equal(labels.numpy(), expected)
    assert (labels == -1).any() and (labels == 1).sum() >= 4


def test_loss_with_hard_negative_mining_against_reference():
    torch.manual_seed(1)
    anchors = make_anchors(64, (8, 16))
    n = anchors.shape[0]
    logits, offsets = torch.randn(2, n), torch.randn(2, n, 4)
    faces = [torch.tensor([[8.0, 8.0, 24.0, 26.0], [30.0, 30.0, 60.0, 62.0]]), torch.tensor([[2.0, 40.0, 14.0, 54.0]])]
    hpo = HpoConfig(optimizer="sgd", lr=1e-3, min_crop=0.3, iou_pos=0.5, loc_weight=4, neg_pos_ratio=2)
    loss, parts = detection_loss(logits, offsets, anchors, faces, hpo)
    cls_sum, loc_sum, n_pos = 0.0, 0.0, 0
    for b in range(2):
        labels, target = match_anchors(anchors, faces[b], 0.5, 0.3)
        bce = F.binary_cross_entropy_with_logits(logits[b], (labels == 1).float(), reduction="none")
        pos = (labels == 1).nonzero().flatten().tolist()
        negs = sorted(((float(bce[i]), i) for i in range(n) if labels[i] == 0), reverse=True)
        kept = [i for _, i in negs[: 2 * len(pos)]]  # neg:pos = 2
        cls_sum += sum(float(bce[i]) for i in pos + kept)
        for i in pos:
            want = encode_boxes(faces[b][target[i]][None], anchors[i][None])[0]
            diff = (offsets[b, i] - want).abs()
            loc_sum += float(torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).sum())
        n_pos += len(pos)
    assert parts["positives"] == n_pos
    assert parts["cls"] == pytest.approx(cls_sum / n_pos, rel=1e-5)
    assert parts["loc"] == pytest.approx(loc_sum / n_pos, rel=1e-5)
    assert float(loss) == pytest.approx(cls_sum / n_pos + 4 * loc_sum / n_pos, rel=1e-5)


def test_crop_augmentation_moves_boxes_with_the_pixels():
    images = torch.zeros(6, 3, 64, 64)
    faces = []
    for i in range(6):
        x0, y0 = 10 + 4 * i, 14 + 2 * i
        images[i, :, y0 : y0 + 20, x0 : x0 + 16] = 1.0
        faces.append(torch.tensor([[float(x0), float(y0), x0 + 16.0, y0 + 20.0]]))
    out, boxes = augment_batch(images, faces, 0.55, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    checked = 0
    for img, b in zip(out, boxes):
        if len(b) == 0:
            continue
        ys, xs = torch.nonzero(img[0] > 0.5, as_tuple=True)
        bright = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        np.testing.assert_allclose(b[0].numpy(), bright.numpy(), atol=2.0)
        checked += 1
    assert checked >= 3
    same, kept = augment_batch(images, faces, 1.0, torch.Generator().manual_seed(0))
    for img, orig, b, f in zip(same, images, kept, faces):  # no crop: identity or a mirror image
        flipped = not torch.allclose(img, orig, atol=1e-5)
        if flipped:
            torch.testing.assert_close(img, orig.flip(-1), atol=1e-5, rtol=0)
            f = torch.stack([64 - f[:, 2], f[:, 1], 64 - f[:, 0], f[:, 3]], dim=1)
        torch.testing.assert_close(b, f, atol=1e-4, rtol=0)


def test_fit_detector_is_seeded_and_reports_plain_numbers():
    ds = load_detection_domain("large", n_images=30)
    kwargs = dict(epochs=2, seed=5, batch_size=8, width_mult=0.25, eval_every=1)
    a = fit_detector(ds, HpoConfig.default(), _ARCHS[0], **kwargs)
    b = fit_detector(ds, HpoConfig.default(), _ARCHS[0], **kwargs)
    assert a.val_ap50 == b.val_ap50 and a.test_ap50 == b.test_ap50 and a.train_loss == b.train_loss
    assert 0.0 <= a.val_ap50 <= 1.0 and 0.0 <= a.test_ap50 <= 1.0 and a.best_epoch in (1, 2)
    assert a.cost_s > 0 and a.params > 0
    assert a.cpu_s > 0 and set(a.to_dict()) == {"val_ap50", "test_ap50", "best_epoch", "epochs", "train_loss", "cost_s", "cpu_s", "params"}


def test_fit_detector_learns_an_easy_domain():
    # One large face per image: a few epochs take AP@50 clearly above an untrained model's.
    ds = load_detection_domain("large", n_images=80)
    hpo = HpoConfig(optimizer="adam", lr=3e-3, min_crop=0.55, iou_pos=0.5, loc_weight=2, neg_pos_ratio=7)
    trained = fit_detector(ds, hpo, _ARCHS[0], epochs=8, seed=0, batch_size=8, width_mult=0.25, eval_every=2)
    assert trained.test_ap50 > 0.3, trained


def test_diverging_training_raises_and_bad_arguments_are_listed():
    ds = load_detection_domain("plain", n_images=20)
    broken = np.array(ds.train.images)
    broken[:] = np.nan
    nan_ds = DetectionDataset(
        name="nan", domain="plain", image_size=64, dataset_id="det-nan", val=ds.val, test=ds.test,
        train=DetectionSplit(images=broken, boxes=ds.train.boxes),
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match="training diverged"):
        fit_detector(nan_ds, HpoConfig.default(), _ARCHS[0], epochs=1, batch_size=4, width_mult=0.25)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1.*batch_size must be an integer >= 2"):
        fit_detector(ds, HpoConfig.default(), _ARCHS[0], epochs=0, batch_size=1)
