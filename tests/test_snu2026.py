"""The 2026 challenge's scores: SSIM_full over the foreground pixels, SSIM_bbox in lesion boxes, annotations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from kspacelab import formats, metrics
from kspacelab.cli import main
from kspacelab.errors import DataFormatError
from kspacelab.evaluation import evaluate_snu2026

skimage_metrics = pytest.importorskip("skimage.metrics")

MAX = 4e-4


def _knee_slice(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A target with a textured foreground block (above the knee threshold 2e-5) in a dark frame, and a noisy
    reconstruction of it."""
    rng = np.random.default_rng(seed)
    target = np.zeros((size, size))
    target[30:66, 25:75] = 1e-4 + 2e-4 * rng.random((36, 50))
    recon = np.clip(target + 3e-5 * rng.standard_normal(target.shape), 0, None)
    return recon, target


def _skimage_map(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """Valid-region SSIM map by scikit-image (7 x 7 uniform window, sample covariance)."""
    _, full = skimage_metrics.structural_similarity(
        x, y, win_size=7, data_range=data_range, use_sample_covariance=True, gaussian_weights=False, full=True
    )
    return np.asarray(full)[3:-3, 3:-3]


def _opencv_mask(target: np.ndarray) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    kernel = np.ones((3, 3), np.uint8)
    m = (target > 2e-5).astype(np.uint8)
    m = cv2.erode(m, kernel, iterations=1)
    m = cv2.dilate(m, kernel, iterations=15)
    return cv2.erode(m, kernel, iterations=14).astype(bool)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_ssim_equals_an_independent_computation(seed: int) -> None:
    recon, target = _knee_slice(seed)
    mask = _opencv_mask(target)
    ssim_map = _skimage_map(recon * mask, target * mask, MAX)
    weights = mask[3:-3, 3:-3].astype(np.float64)
    expected = float((ssim_map * weights).sum() / weights.sum())
    got = metrics.snu2026_full_ssim(recon, target, MAX, "knee")
    assert got == pytest.approx(expected, abs=1e-10)
    # a weighted mean over the mask, not the plain mean of today's leaderboard SSIM
    assert got != pytest.approx(metrics.leaderboard_ssim(recon, target, MAX, "knee"), abs=1e-4)


@pytest.mark.parametrize(
    ("box", "crop"),
    [
        ((30, 32, 20, 17), (slice(32, 49), slice(30, 50))),  # x = column, y = row
        ((-5, 80, 40, 30), (slice(80, 96), slice(0, 35))),  # clipped to the image
    ],
)
def test_box_ssim_equals_an_independent_computation(box: tuple, crop: tuple) -> None:
    recon, target = _knee_slice(3)
    expected = float(_skimage_map(recon[crop], target[crop], MAX).mean())
    assert metrics.snu2026_box_ssim(recon, target, MAX, box) == pytest.approx(expected, abs=1e-10)


def test_constructed_cases() -> None:
    recon, target = _knee_slice(4)
    assert metrics.snu2026_full_ssim(target, target, MAX) == pytest.approx(1.0, abs=1e-12)
    assert metrics.snu2026_box_ssim(target, target, MAX, (5, 5, 30, 30)) == pytest.approx(1.0, abs=1e-12)
    dark = np.zeros_like(target)
    assert metrics.snu2026_full_ssim(recon, dark, MAX) is None  # empty mask: the slice is skipped
    assert metrics.snu2026_box_ssim(recon, target, MAX, (10, 10, 6, 30)) is None  # a side under 7: skipped
    assert (
        metrics.snu2026_box_ssim(recon, target, MAX, (92, 10, 20, 30)) is None
    )  # 4 columns left after clipping
    assert metrics.snu2026_box_ssim(recon, target, MAX, (89, 10, 20, 30)) is not None  # 7 columns left
    with pytest.raises(ValueError, match="shape"):
        metrics.snu2026_full_ssim(recon[:-1], target, MAX)


# -------------------------------------------------------------------------------------- annotations


def _image_file(tmp_path: Path, slices: int = 3, size: int = 96) -> Path:
    path = tmp_path / "knee_acc4_1.h5"
    label = np.stack([_knee_slice(i, size)[1] for i in range(slices)]).astype(np.float32)
    formats.write_image_file(path, label, label, label, float(label.max()))
    return path


def test_annotations_round_trip(tmp_path: Path) -> None:
    path = _image_file(tmp_path)
    assert formats.read_annotations(path) == {}
    boxes = {
        0: [formats.Box(10, 12, 20, 17, "lesion")],
        2: [formats.Box(-5, 50, 20, 30), formats.Box(1, 2, 30, 40)],
    }
    formats.write_annotations(path, boxes)
    assert formats.read_annotations(path) == boxes


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "must map slice indices"),
        ('{"x": []}', "slice key 'x' is not an integer"),
        ('{"3": []}', "slice 3 out of range"),
        ('{"0": [{"x": 1, "y": 2, "width": "3", "height": 4}]}', "numeric x, y, width, height"),
        ('{"0": [{"x": 1, "y": 2, "width": 0, "height": 4}]}', "non-positive"),
        ('{"0": [{"x": 100, "y": 2, "width": 10, "height": 10}]}', "outside the 96 x 96 image"),
        ('{"0": [{"x": -20, "y": 2, "width": 10, "height": 10}]}', "outside the 96 x 96 image"),
    ],
)
def test_bad_annotations_are_one_line_errors(tmp_path: Path, raw: str, match: str) -> None:
    path = _image_file(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["annotations"] = raw
    with pytest.raises(DataFormatError, match=match) as err:
        formats.read_annotations(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataFormatError, match="outside"):  # the writer validates before touching the file
        formats.write_annotations(_image_file(tmp_path / "w"), {0: [formats.Box(100, 0, 10, 10)]})


# -------------------------------------------------------------------------------------------- evaluate


def _leaderboard(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A two-folder leaderboard of one knee volume each, with boxes, and noisy reconstructions."""
    root, recon = tmp_path / "leaderboard", tmp_path / "recon"
    recons = {}
    for k, group in enumerate(("acc4", "acc8")):
        (root / group / "image").mkdir(parents=True)
        (recon / group).mkdir(parents=True)
        path = _image_file(root / group / "image")
        formats.write_annotations(path, {0: [formats.Box(30, 32, 20, 17)], 1: [formats.Box(30, 20, 5, 30)],
                                         2: [formats.Box(40, 35, 25, 25), formats.Box(-5, 80, 40, 30)]})  # fmt: skip
        label = formats.read_image_volume(path)
        noise = np.random.default_rng(k).standard_normal(label.shape) * (1 + k) * 2e-5
        noisy = np.clip(label + noise, 0, None).astype(np.float32)
        formats.write_reconstruction(recon / group / path.name, noisy)
        recons[group] = noisy
    return root, recon, recons


def test_evaluate_snu2026_pools_slices_and_boxes_per_acceleration(tmp_path: Path) -> None:
    root, recon, recons = _leaderboard(tmp_path)
    result = evaluate_snu2026(root, recon, progress=False)
    for group in ("acc4", "acc8"):
        path = root / group / "image" / "knee_acc4_1.h5"
        label = formats.read_image_volume(path)
        max_value = float(formats.read_image_attrs(path)["max"])
        full = [metrics.snu2026_full_ssim(recons[group][i], label[i], max_value) for i in range(3)]
        boxes = [
            (0, (30, 32, 20, 17)),
            (2, (40, 35, 25, 25)),
            (2, (-5, 80, 40, 30)),
        ]  # the 5-wide box is skipped
        bbox = [metrics.snu2026_box_ssim(recons[group][i], label[i], max_value, b) for i, b in boxes]
        assert result.full[group] == pytest.approx(np.mean(full), abs=1e-12)
        assert result.bbox[group] == pytest.approx(np.mean(bbox), abs=1e-12)  # mean over boxes, not slices
        assert result.slices[group] == 3 and result.boxes[group] == 3
    assert result.ssim_full == pytest.approx((result.full["acc4"] + result.full["acc8"]) / 2)
    assert result.quality == pytest.approx((result.ssim_full + result.ssim_bbox) / 2)  # type: ignore[operator]


def test_evaluate_cli_snu2026_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, recon, _ = _leaderboard(tmp_path)
    out = tmp_path / "scores.json"
    argv = ["evaluate", "--leaderboard", str(root), "--recon", str(recon), "--metric", "snu2026"]
    assert main([*argv, "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    scores = json.loads(out.read_text())
    assert scores["metric"] == "snu2026" and f"quality: {scores['quality']:.4f}" in printed
    assert scores["quality"] == pytest.approx((scores["ssim_full"] + scores["ssim_bbox"]) / 2)
    # the default stays the 2025 leaderboard SSIM
    assert main(["evaluate", "--leaderboard", str(root), "--recon", str(recon), "--quiet"]) == 0
    assert "SSIM total" in capsys.readouterr().out
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    with h5py.File(bad / "acc8" / "image" / "knee_acc4_1.h5", "r+") as f:
        f.attrs["annotations"] = '{"7": []}'
    assert (
        main(["evaluate", "--leaderboard", str(bad), "--recon", str(recon), "--metric", "snu2026", "--quiet"])
        == 2
    )
    assert "slice 7 out of range" in capsys.readouterr().err


def test_simulated_knee_volumes_carry_boxes_and_score_end_to_end(tmp_path: Path) -> None:
    """`kspacelab simulate --annotations`: knee-class image files get valid boxes over structures (sides over
    16 pixels), brain files none, and `evaluate --metric snu2026` runs on the result."""
    from helpers import TINY
    from kspacelab.data.synthetic import MIN_BOX_SIDE, simulate_dataset
    from kspacelab.inference import ReconOptions, reconstruct_dataset

    root = tmp_path / "data"
    simulate_dataset(root, preset=TINY, progress=False, annotations=True)
    counted = 0
    for path in sorted((root / "leaderboard").rglob("image/*.h5")) + sorted(
        (root / "train").rglob("image/*.h5")
    ):
        boxes = formats.read_annotations(path)  # validated on reading
        if path.name.startswith("brain"):
            assert boxes == {}
            continue
        label = formats.read_image_volume(path)
        for index, slice_boxes in boxes.items():
            for box in slice_boxes:
                assert box.width >= MIN_BOX_SIDE and box.height >= MIN_BOX_SIDE
                assert box.x >= 0 and box.y >= 0
                assert box.x + box.width <= label.shape[-1] and box.y + box.height <= label.shape[-2]
                crop = label[index, int(box.y) : int(box.y + box.height), int(box.x) : int(box.x + box.width)]
                assert crop.max() > np.quantile(label[index], 0.9)  # over a bright structure
                counted += 1
    assert counted > 0
    reconstruct_dataset(root / "leaderboard", tmp_path / "zf", "zero-filled", ReconOptions(progress=False))
    result = evaluate_snu2026(root / "leaderboard", tmp_path / "zf", progress=False)
    assert sum(result.boxes.values()) > 0 and result.quality is not None and 0 < result.quality < 1
    plain = tmp_path / "plain"
    simulate_dataset(plain, preset=TINY, progress=False)  # the default writes the 2025 layout, no boxes
    assert all(formats.read_annotations(p) == {} for p in plain.rglob("image/*.h5"))


# ----------------------------------------------------------------------- the 2026 loss and validation scores


def _knee_like(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A bright disc with texture on a dark background (a foreground mask of about half the image)."""
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.35 * size) ** 2).astype(np.float64)
    return 1e-4 * disc * (1.0 + 0.3 * rng.standard_normal((size, size)))


def test_the_2026_loss_is_one_minus_the_pooled_quality() -> None:
    import torch

    rng = np.random.default_rng(3)
    targets = np.stack([_knee_like(rng), _knee_like(rng), np.zeros((48, 48))])  # the last: no foreground
    recons = targets + 2e-5 * rng.standard_normal(targets.shape)
    max_value = np.array([targets[0].max(), targets[1].max(), 1e-4])
    boxes = np.zeros((3, 16, 4), dtype=np.float32)
    boxes[0, 0] = (10, 12, 20, 17)  # inside
    boxes[0, 1] = (40, -5, 20, 30)  # partly outside: clipped to 8 x 25
    boxes[1, 0] = (5, 5, 6, 30)  # a side under 7: skipped
    boxes[2, 0] = (0, 0, 30, 30)  # a box on a slice without foreground still counts
    full = [metrics.snu2026_full_ssim(recons[i], targets[i], max_value[i], "knee") for i in range(3)]
    assert full[2] is None
    in_boxes = [
        metrics.snu2026_box_ssim(recons[i], targets[i], max_value[i], tuple(row))
        for i in range(3)
        for row in boxes[i]
        if row[2] > 0
    ]
    scored = [v for v in in_boxes if v is not None]
    assert len(scored) == 3
    expected = 1 - (np.mean([f for f in full if f is not None]) + np.mean(scored)) / 2

    recon_t = torch.tensor(recons, requires_grad=True)
    target_t = torch.tensor(targets)
    mask = torch.from_numpy(np.stack([metrics.foreground_mask(t, "knee") for t in targets]))
    loss = metrics.snu2026_loss(recon_t, target_t, torch.tensor(max_value), mask, torch.from_numpy(boxes))
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-10)
    loss.backward()
    assert recon_t.grad is not None and torch.isfinite(recon_t.grad).all() and recon_t.grad.abs().sum() > 0
    # without boxes: 1 - SSIM_full
    no_boxes = metrics.snu2026_loss(recon_t, target_t, torch.tensor(max_value), mask, None)
    assert float(no_boxes) == pytest.approx(1 - np.mean([f for f in full if f is not None]), abs=1e-10)
    # a perfect reconstruction has no loss
    perfect = metrics.snu2026_loss(target_t, target_t, torch.tensor(max_value), mask, torch.from_numpy(boxes))
    assert float(perfect) == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def annotated_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import TINY
    from kspacelab.data.synthetic import simulate_dataset

    root = tmp_path_factory.mktemp("annotated") / "data"
    simulate_dataset(root, preset=TINY, progress=False, annotations=True)
    return root


def test_training_samples_carry_the_files_boxes(annotated_root: Path) -> None:
    from kspacelab.data.dataset import SliceDataset, SnuDataModule

    dm = SnuDataModule(str(annotated_root))
    dm.setup("fit")
    assert dm.val_dataset is not None
    seen = 0
    for index in range(len(dm.val_dataset)):
        sample = dm.val_dataset[index]
        vol = dm.val_dataset.volumes[dm.val_dataset.items[index][0]].volume
        assert vol.image_path is not None
        expected = formats.read_annotations(vol.image_path).get(sample.slice_num, [])
        rows = [tuple(r) for r in sample.boxes.tolist() if r[2] > 0]
        assert rows == [pytest.approx((b.x, b.y, b.width, b.height)) for b in expected]
        seen += len(rows)
    assert seen > 0  # the knee-class volumes have boxes
    # a dataset for inference does not read the annotations: every slice carries the zero boxes
    plain = SliceDataset([info.volume for info in dm.val_dataset.volumes], dm.val_dataset.transform)
    assert all(not plain[i].boxes.any() for i in range(len(plain)))


def test_validation_logs_both_2026_scores_and_the_loss_trains(annotated_root: Path, tmp_path: Path) -> None:
    import lightning.pytorch as L
    import torch

    from kspacelab.data.dataset import SnuDataModule
    from kspacelab.errors import KspacelabError
    from kspacelab.evaluation import evaluate_snu2026
    from kspacelab.inference import ReconOptions, reconstruct_with_checkpoint
    from kspacelab.training import ReconModule

    tiny = {"num_cascades": 1, "chans": 4, "sens_chans": 2, "pools": 2, "sens_pools": 2}
    torch.manual_seed(0)
    module = ReconModule(model_kwargs=tiny, loss="snu2026", lr=1e-3)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=SnuDataModule(str(annotated_root)))
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"train/loss", "val/ssim", "val/ssim_full", "val/ssim_bbox", "val/quality"} <= set(logged)
    assert logged["val/quality"] == pytest.approx((logged["val/ssim_full"] + logged["val/ssim_bbox"]) / 2)

    # the same numbers as `evaluate --metric snu2026` on the trained model's reconstructions of the val split,
    # laid out as a leaderboard (acc4/, acc8/) so that both pool per acceleration first
    board = tmp_path / "board"
    for kind in ("kspace", "image"):
        for path in (annotated_root / "val" / kind).glob("*.h5"):
            folder = board / ("acc4" if "_acc4_" in path.name else "acc8") / kind
            folder.mkdir(parents=True, exist_ok=True)
            (folder / path.name).symlink_to(path)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "rec"
    reconstruct_with_checkpoint(board, out, ckpt, ReconOptions(progress=False))
    scores = evaluate_snu2026(board, out, progress=False)
    assert scores.ssim_bbox is not None and scores.boxes and sum(scores.boxes.values()) > 0
    assert logged["val/ssim_full"] == pytest.approx(scores.ssim_full, abs=1e-5)
    assert logged["val/ssim_bbox"] == pytest.approx(scores.ssim_bbox, abs=1e-5)

    with pytest.raises(KspacelabError, match="area_weighted_loss"):
        ReconModule(model_kwargs=tiny, loss="snu2026", area_weighted_loss=True)
    with pytest.raises(KspacelabError, match="unknown loss"):
        ReconModule(model_kwargs=tiny, loss="psnr")  # type: ignore[arg-type]
    augmented = SnuDataModule(str(annotated_root), augment={"schedule": {"strength": 0.5}})
    quiet = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(KspacelabError, match=r"data\.augment"):
        quiet.fit(ReconModule(model_kwargs=tiny, loss="snu2026"), datamodule=augmented)
