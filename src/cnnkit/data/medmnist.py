"""MedMNIST v2 (28x28): medical images as official ``.npz`` files, read with ``allow_pickle=False``.

Every single-label 2-D collection of MedMNIST is registered under its own name
(``pneumoniamnist``, ``bloodmnist``, ``dermamnist``, ``organamnist``, ...), cached as
``<cache>/medmnist/<name>.npz``. Each comes with the official train/validation/test split;
the validation split is the one ``cnnkit train`` validates on. URLs and MD5 checksums are
MedMNIST's own (``medmnist.INFO``; Zenodo record 10519652, the same files as record 6496656).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from cnnkit.data.catalog import Dataset, DatasetInfo, ImageArrays, register_dataset
from cnnkit.data.downloads import RemoteFile
from cnnkit.data.standard import arrays_from_uint8
from cnnkit.errors import DataError

__all__ = ["MEDMNIST", "read_medmnist"]

_ZENODO = (
    "https://zenodo.org/records/10519652/files/{}.npz?download=1",
    "https://zenodo.org/record/6496656/files/{}.npz?download=1",
)

_ORGANS = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen"]  # fmt: skip

# name -> (md5, channels, class names, (train, val, test) sizes, augmentation, what it shows)
MEDMNIST: dict[str, tuple[str, int, list[str], tuple[int, int, int], str, str]] = {
    "pneumoniamnist": ("28209eda62fecd6e6a2d98b1501bb15f", 1, ["normal", "pneumonia"], (4708, 524, 624), "crop",
                       "paediatric chest X-rays: pneumonia or normal"),
    "bloodmnist": ("7053d0359d879ad8a5505303e11de1dc", 3,
                   ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte",
                    "neutrophil", "platelet"], (11959, 1712, 3421), "flip-crop", "blood cell microscopy, 8 cell types"),
    "dermamnist": ("0744692d530f8e62ec473284d019b0c7", 3,
                   ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                    "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                    "vascular lesions"], (7007, 1003, 2005), "flip-crop", "dermatoscope photos of skin lesions"),
    "organamnist": ("866b832ed4eeba67bfb9edee1d5544e6", 1, _ORGANS, (34581, 6491, 17778), "crop",
                    "abdominal CT, axial slices: 11 organs"),
    "organcmnist": ("0afa5834fb105f7705a7d93372119a21", 1, _ORGANS, (13000, 2392, 8268), "crop",
                    "abdominal CT, coronal slices: 11 organs"),
    "organsmnist": ("e5c39f1af030238290b9557d9503af9d", 1, _ORGANS, (13940, 2452, 8829), "crop",
                    "abdominal CT, sagittal slices: 11 organs"),
    "pathmnist": ("a8b06965200029087d5bd730944a56c1", 3,
                  ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
                   "cancer-associated stroma", "colorectal adenocarcinoma epithelium"], (89996, 10004, 7180),
                  "flip-crop", "colon pathology slides, 9 tissue types"),
    "octmnist": ("c68d92d5b585d8d81f7112f81e2d0842", 1,
                 ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"], (97477, 10832, 1000),
                 "crop", "retinal OCT scans, 4 diagnoses"),
    "breastmnist": ("750601b1f35ba3300ea97c75c52ff8f6", 1, ["malignant", "normal, benign"], (546, 78, 156), "crop",
                    "breast ultrasound: malignant or not"),
    "retinamnist": ("bd4c0672f1bba3e3a89f0e4e876791e4", 3, ["0", "1", "2", "3", "4"], (1080, 120, 400), "flip-crop",
                    "retina fundus photos, diabetic retinopathy grade 0-4"),
    "tissuemnist": ("ebe78ee8b05294063de985d821c1c34b", 1,
                    ["collecting duct, connecting tubule", "distal convoluted tubule", "glomerular endothelial cells",
                     "interstitial endothelial cells", "leukocytes", "podocytes", "proximal tubule segments",
                     "thick ascending limb"], (165466, 23640, 47280), "crop", "kidney cortex cell microscopy, 8 types"),
}  # fmt: skip


def read_medmnist(path: Path, name: str, class_names: list[str]) -> Dataset:
    """A MedMNIST ``.npz`` (``{train,val,test}_{images,labels}``) as a Dataset; pickled content is refused."""
    splits: dict[str, ImageArrays] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for split in ("train", "val", "test"):
                images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]  # (N, 28, 28[, 3]) uint8, (N, 1)
                if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
                    raise ValueError(f"{split}_images is {images.dtype} {images.shape} for {len(labels)} labels")
                if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
                    raise ValueError(f"{split}_labels outside 0..{len(class_names) - 1}")
                splits[split] = arrays_from_uint8(images, labels)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a MedMNIST .npz cnnkit can read ({e}); delete it and try again") from None
    return Dataset(name=name, class_names=class_names, train=splits["train"], test=splits["test"], val=splits["val"])


for _name, (_md5, _channels, _classes, _sizes, _augment, _description) in MEDMNIST.items():
    _remote = RemoteFile(f"medmnist/{_name}.npz", tuple(url.format(_name) for url in _ZENODO), md5=_md5)
    register_dataset(DatasetInfo(
        name=_name, loader=lambda root, n=_name, r=_remote, c=_classes: read_medmnist(root / r.path, n, c),
        num_classes=len(_classes), image_shape=(28, 28, _channels), description=f"MedMNIST: {_description}",
        source="MedMNIST v2 on Zenodo (download)", builtin=False, augment=_augment,
        sizes=dict(zip(("train", "val", "test"), _sizes)), files=(_remote,),
    ))  # fmt: skip
