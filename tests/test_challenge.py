"""Tests of kspacelab.challenge: the challenge's anatomies, accelerations, folder and file names, target size."""

from __future__ import annotations

import pytest

from kspacelab import challenge, evaluation, formats, masks, metrics
from kspacelab.challenge import VolumeName, acc_folder, acceleration_of_folder, parse_volume_name
from kspacelab.errors import DataFormatError


def test_vocabulary() -> None:
    assert challenge.ANATOMIES == ("brain", "knee")
    assert (challenge.BRAIN, challenge.KNEE) == challenge.ANATOMIES
    assert challenge.ACCELERATIONS == (4, 8)
    assert challenge.TARGET_SIZE == 384
    assert challenge.TARGET_SHAPE == (384, 384)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("brain_acc4_12.h5", VolumeName("brain", 4, 12)),
        ("knee_acc8_1.h5", VolumeName("knee", 8, 1)),
        ("brain_acc8_203.h5", VolumeName("brain", 8, 203)),  # validation files continue the numbering
        ("knee_test3.h5", VolumeName("knee", None, 3)),
        ("brain_test10.h5", VolumeName("brain", None, 10)),
        ("Brain_ACC4_7.H5", VolumeName("brain", 4, 7)),  # case-insensitive, anatomy lower-cased
        ("KNEE_Test2.h5", VolumeName("knee", None, 2)),
    ],
)
def test_parse_volume_name(name: str, expected: VolumeName) -> None:
    parsed = parse_volume_name(name)
    assert parsed == expected
    assert parsed is not None and parsed.anatomy in challenge.ANATOMIES


@pytest.mark.parametrize(
    "name",
    [
        "",
        "brain_acc4_12",  # no .h5
        "brain_acc4_12.h5.tmp",
        ".brain_acc4_12.h5.tmp-0123abcd",  # atomic_h5's temporary
        "brain_acc4.h5",  # no index
        "brain_accx_1.h5",
        "brain_test_3.h5",  # leaderboard names have no underscore before the index
        "knee_test.h5",
        "liver_acc4_1.h5",
        "file_brain_AXT2_200_2000019.h5",  # an NYU name: formats.anatomy_from_name reads it, parse does not
        "kspace/brain_acc4_1.h5",  # a path, not a name
        "brain_acc4_1.h5 ",
        "brain_acc4_1.h5\n",
        "knee_test3.h5\n",
    ],
)
def test_parse_volume_name_rejects(name: str) -> None:
    assert parse_volume_name(name) is None


@pytest.mark.parametrize(
    "volume", [VolumeName("brain", 4, 12), VolumeName("knee", 8, 1), VolumeName("knee", None, 3)]
)
def test_volume_name_round_trip(volume: VolumeName) -> None:
    assert volume.filename == f"{volume.stem}.h5"
    assert parse_volume_name(volume.filename) == volume


def test_volume_name_stem() -> None:
    assert VolumeName("brain", 4, 12).stem == "brain_acc4_12"
    assert VolumeName("knee", None, 3).stem == "knee_test3"


@pytest.mark.parametrize("acc", [*challenge.ACCELERATIONS, 1, 16, 32])
def test_acc_folder_round_trip(acc: int) -> None:
    assert acceleration_of_folder(acc_folder(acc)) == acc


def test_acc_folder_names() -> None:
    assert [acc_folder(a) for a in challenge.ACCELERATIONS] == ["acc4", "acc8"]
    assert acceleration_of_folder("acc8") == 8


@pytest.mark.parametrize("name", ["", "acc", "Acc4", "ACC8", "acc4/", "acc4x", "xacc4", "acc-4", "image"])
def test_acceleration_of_folder_rejects(name: str) -> None:
    assert acceleration_of_folder(name) is None


def test_acceleration_in_name() -> None:
    assert challenge.acceleration_in_name("brain_acc8_3.h5") == 8
    assert challenge.acceleration_in_name("scan_ACC4.h5") == 4
    assert challenge.acceleration_in_name("knee_test3.h5") is None


def test_other_modules_use_the_vocabulary() -> None:
    assert masks.SUPPORTED_ACCELERATIONS == challenge.ACCELERATIONS
    assert tuple(metrics.FOREGROUND_THRESHOLDS) == challenge.ANATOMIES
    assert evaluation.ACCELERATION_FOLDERS == ("acc4", "acc8")


def test_anatomy_from_name_is_more_lenient_than_parse() -> None:
    assert formats.anatomy_from_name("file_brain_AXT2_200_2000019.h5") == "brain"
    assert formats.anatomy_from_name("KNEE_test3.h5") == "knee"
    with pytest.raises(DataFormatError) as both:
        formats.anatomy_from_name("x_brain_knee.h5")
    assert str(both.value) == (
        "x_brain_knee.h5: cannot tell the anatomy from the file name (contains both 'brain' and 'knee')"
    )
    with pytest.raises(DataFormatError) as neither:
        formats.anatomy_from_name("scan_7.h5")
    assert str(neither.value) == (
        "scan_7.h5: cannot tell the anatomy from the file name (contains neither 'brain' and 'knee')"
    )
