"""Standard data sets that come as folders of photos: GTSRB (traffic signs) and LFW people (faces).

Both are laid out in the cache as torchvision lays them out, and decoded through the one
decoding path, in parallel. Decoding tens of thousands of files takes a while, so the
decoded arrays are kept beside the photos (``cnnkit-v1-<H>x<W>x<C>.npz``, read back with
``allow_pickle=False``); delete that file if you change the photos.

- ``gtsrb``: ``<cache>/gtsrb/GTSRB/Training/<class>/*.ppm``, ``GTSRB/Final_Test/Images/*.ppm``
  and ``GT-final_test.csv`` (torchvision.datasets.GTSRB's layout and archives); 43 sign
  classes, served at 32x32 RGB. No flips in its augmentation: a mirrored sign means another thing.
- ``lfw-people``: ``<cache>/lfw-py/lfw_funneled/<Name>/<Name>_0001.jpg`` (torchvision.datasets.LFWPeople's
  layout; the archive from scikit-learn's mirror with its SHA-256). The people with at least
  70 photos (7 of them, 1,288 photos, as in scikit-learn's ``fetch_lfw_people(min_faces_per_person=70)``),
  the face cropped out of each 250x250 photo, served at 64x64 RGB; a stratified 80/20
  train/test split with a fixed seed.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnnkit.data.catalog import Dataset, DatasetInfo, register_dataset
from cnnkit.data.decode import is_image_path
from cnnkit.data.downloads import RemoteFile, extract_archive
from cnnkit.data.split import stratified_split
from cnnkit.errors import DataError

__all__ = ["GTSRB_CLASSES", "load_gtsrb", "load_lfw_people"]

_VERSION = "v1"  # bump when the decoding of these photos changes, so stale arrays are not reused


def _cached_arrays(folder: Path, shape: tuple[int, int, int], build: Callable[[], dict[str, np.ndarray]]
                   ) -> dict[str, np.ndarray]:  # fmt: skip
    """``build()``'s arrays, saved once as an .npz in ``folder`` and read back from there afterwards."""
    from cnnkit._io import atomic_write

    path = folder / f"cnnkit-{_VERSION}-{'x'.join(map(str, shape))}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError, KeyError):
            pass  # damaged: rebuild it
    arrays = build()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
            np.savez(f, **arrays)

    atomic_write(path, write)
    return arrays


def _decode_all(paths: list[Path], shape: tuple[int, int, int], crop=None) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """uint8 images at ``shape`` and which files could be read (a damaged photo is left out, not fatal)."""
    from cnnkit.data.scan import scan_files

    scan = scan_files(paths, shape, progress=True, crop=crop)
    return (scan.images * 255).round().astype(np.uint8), scan.ok


def _to_dataset(name: str, classes: list[str], arrays: dict[str, np.ndarray]) -> Dataset:
    from cnnkit.data.standard import arrays_from_uint8

    train = arrays_from_uint8(arrays["train_images"], arrays["train_labels"])
    test = arrays_from_uint8(arrays["test_images"], arrays["test_labels"])
    return Dataset(name=name, class_names=classes, train=train, test=test)


# -- GTSRB ---------------------------------------------------------------------------------------------
GTSRB_CLASSES = [
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70", "speed limit 80",
    "end of speed limit 80", "speed limit 100", "speed limit 120", "no passing", "no passing for trucks",
    "right of way at next intersection", "priority road", "yield", "stop", "no vehicles", "no trucks", "no entry",
    "general caution", "dangerous curve left", "dangerous curve right", "double curve", "bumpy road", "slippery road",
    "road narrows on the right", "road work", "traffic signals", "pedestrians", "children crossing",
    "bicycles crossing", "beware of ice/snow", "wild animals crossing", "end of all speed and passing limits",
    "turn right ahead", "turn left ahead", "ahead only", "go straight or right", "go straight or left", "keep right",
    "keep left", "roundabout mandatory", "end of no passing", "end of no passing for trucks",
]  # fmt: skip
_ERDA = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
_GTSRB_FILES = (  # torchvision.datasets.GTSRB's archives and checksums
    RemoteFile("gtsrb/GTSRB-Training_fixed.zip", (f"{_ERDA}GTSRB-Training_fixed.zip",),
               md5="513f3c79a4c5141765e10e952eaa2478"),
    RemoteFile("gtsrb/GTSRB_Final_Test_Images.zip", (f"{_ERDA}GTSRB_Final_Test_Images.zip",),
               md5="c7e4e6327067d32654124b0fe9e82185"),
    RemoteFile("gtsrb/GTSRB_Final_Test_GT.zip", (f"{_ERDA}GTSRB_Final_Test_GT.zip",),
               md5="fe31e9c9270bbcd7b84b7f21a9d9d9e5"),
)  # fmt: skip
# What each archive unpacks to, relative to <cache>/gtsrb.
_GTSRB_CONTENT = ("GTSRB/Training", "GTSRB/Final_Test/Images", "GT-final_test.csv")


def _gtsrb_ready(root: Path) -> bool:
    base = root / "gtsrb"
    return all((base / content).exists() or (root / remote.path).exists()
               for remote, content in zip(_GTSRB_FILES, _GTSRB_CONTENT))  # fmt: skip


def _gtsrb_samples(base: Path) -> dict[str, tuple[list[Path], list[int]]]:
    train_paths, train_labels = [], []
    for class_dir in sorted((base / "GTSRB" / "Training").iterdir()):
        if class_dir.is_dir() and class_dir.name.isdigit():
            files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() == ".ppm")
            train_paths += files
            train_labels += [int(class_dir.name)] * len(files)
    try:
        with open(base / "GT-final_test.csv", newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";", skipinitialspace=True))
        images = base / "GTSRB" / "Final_Test" / "Images"
        test = ([images / row["Filename"] for row in rows], [int(row["ClassId"]) for row in rows])
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{base / 'GT-final_test.csv'}: not GTSRB's test labels ({e})") from None
    return {"train": (train_paths, train_labels), "test": test}


def load_gtsrb(root: Path) -> Dataset:
    """GTSRB: 39,209 training and 12,630 test photos of 43 German traffic signs, at 32x32 RGB."""
    base = root / "gtsrb"
    for remote, content in zip(_GTSRB_FILES, _GTSRB_CONTENT):
        if not (base / content).exists():
            extract_archive(root / remote.path, base)
    shape = (32, 32, 3)

    def build() -> dict[str, np.ndarray]:
        arrays = {}
        for split, (paths, labels) in _gtsrb_samples(base).items():
            if not paths or max(labels) >= len(GTSRB_CLASSES):
                raise DataError(f"{base}: no GTSRB {split} images with class ids 0-42 found")
            images, ok = _decode_all(paths, shape)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[ok], np.asarray(labels)[ok]
        return arrays

    return _to_dataset("gtsrb", GTSRB_CLASSES, _cached_arrays(base, shape, build))


register_dataset(DatasetInfo(
    name="gtsrb", loader=load_gtsrb, num_classes=43, image_shape=(32, 32, 3),
    description="German traffic signs, 43 kinds (for the article's self-driving cars)",
    source="torchvision.datasets.GTSRB layout, ERDA archive (download)", builtin=False, augment="crop",
    sizes={"train": 39209, "test": 12630}, files=_GTSRB_FILES, ready=_gtsrb_ready,
))  # fmt: skip


# -- LFW people ----------------------------------------------------------------------------------------
LFW_MIN_FACES = 70
_LFW_ARCHIVE = RemoteFile("lfw-py/lfw-funneled.tgz", ("https://ndownloader.figshare.com/files/5976015",),
                          sha256="b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a")  # fmt: skip
_FACE_BOX = (62 / 250, 70 / 250, 187 / 250, 195 / 250)  # the centred face in a funneled 250x250 LFW photo
_LFW_TEST_FRACTION, _LFW_SEED = 0.2, 0


def _lfw_folder(root: Path) -> Path:
    return root / "lfw-py" / "lfw_funneled"


def load_lfw_people(root: Path) -> Dataset:
    """LFW people with at least 70 photos each: 7 identities, their faces at 64x64 RGB, 80/20 stratified split."""
    folder = _lfw_folder(root)
    if not folder.is_dir():
        extract_archive(root / _LFW_ARCHIVE.path, root / "lfw-py")
    people = {}
    for person in sorted(d for d in folder.iterdir() if d.is_dir()):
        photos = sorted(p for p in person.iterdir() if is_image_path(p))
        if len(photos) >= LFW_MIN_FACES:
            people[person.name] = photos
    if len(people) < 2:
        raise DataError(f"{folder}: fewer than two people with {LFW_MIN_FACES} or more photos; is it LFW?")
    names = sorted(people)
    shape = (64, 64, 3)

    def build() -> dict[str, np.ndarray]:
        paths = [p for name in names for p in people[name]]
        labels = np.array([i for i, name in enumerate(names) for _ in people[name]])
        images, ok = _decode_all(paths, shape, crop=_FACE_BOX)
        images, labels = images[ok], labels[ok]
        train, test = stratified_split(labels, _LFW_TEST_FRACTION, _LFW_SEED)
        return {"train_images": images[train], "train_labels": labels[train], "test_images": images[test],
                "test_labels": labels[test], "names": np.array(names)}  # fmt: skip

    arrays = _cached_arrays(folder, shape, build)
    return _to_dataset("lfw-people", [str(n) for n in arrays["names"]], arrays)


register_dataset(DatasetInfo(
    name="lfw-people", loader=load_lfw_people, num_classes=7, image_shape=(64, 64, 3),
    description=f"faces of the 7 people with {LFW_MIN_FACES}+ photos in Labeled Faces in the Wild",
    source="torchvision.datasets.LFWPeople layout, scikit-learn's mirror (download)", builtin=False,
    augment="flip-crop", sizes={"train": 1030, "test": 258}, files=(_LFW_ARCHIVE,),
    ready=lambda root: _lfw_folder(root).is_dir() or (root / _LFW_ARCHIVE.path).exists(),
))  # fmt: skip
