"""The data health check: what ``cnnkit check-data`` reports, and what training checks first.

From one scan of the files (:mod:`cnnkit.data.scan`): files that cannot be used and why;
exact duplicates (same bytes) and near duplicates (difference hashes a few bits apart);
the same picture in two splits (leakage: the test score would flatter the model);
duplicates filed under different classes; class counts per split and the imbalance ratio;
image sizes, modes and formats. The report is a plain dict (``data_report.json``), a
table for the terminal and a self-contained HTML page (:mod:`cnnkit.data.check_html`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.data.folders import ImageIndex
from cnnkit.data.scan import FileRecord, ScanResult

__all__ = ["NEAR_THRESHOLD", "DataReport", "build_report", "near_duplicate_pairs"]

NEAR_THRESHOLD = 4  # dHash bits: resized, re-encoded or slightly brightened copies stay within this
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # NumPy 2
        return np.bitwise_count(x)
    return np.unpackbits(x.view(np.uint8).reshape(*x.shape, 8), axis=-1).sum(-1)


def near_duplicate_pairs(hashes: np.ndarray, threshold: int = NEAR_THRESHOLD) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose 64-bit hashes differ in at most ``threshold`` bits.

    Pigeonhole banding instead of all N^2 comparisons: cut the 64 bits into ``threshold + 1``
    bands; two hashes that close agree exactly on at least one band, so only hashes that
    share a band value are compared.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    edges = np.linspace(0, 64, threshold + 2).astype(int)
    found: set[tuple[int, int]] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        keys = (hashes >> np.uint64(lo)) & np.uint64((1 << int(hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(keys[order])) + 1):
            for start in range(0, len(group) - 1, 1024):  # rows in chunks: memory stays bounded
                rows = group[start : start + 1024]
                distance = _popcount(hashes[rows][:, None] ^ hashes[group][None, :])  # (rows, group)
                for r, c in zip(*np.nonzero(distance <= threshold)):
                    i, j = int(rows[r]), int(group[c])
                    if i < j:
                        found.add((i, j))
    return sorted(found)


def _groups(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components (of size >= 2) of the pairs, by union-find."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


@dataclass(frozen=True)
class DataReport:
    """The health report of one folder or CSV: ``summary`` for people, ``to_dict()`` for ``data_report.json``."""

    source: str
    index: ImageIndex
    records: list[FileRecord]
    exact_groups: list[list[int]]  # positions of files with identical bytes
    near_groups: list[list[int]]  # positions of files that look alike but differ in bytes
    near_threshold: int

    @property
    def bad(self) -> list[FileRecord]:
        return [r for r in self.records if not r.ok]

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / max(1, len(self.records))

    @property
    def channels(self) -> int:
        """1 if every readable file is grey, else 3: what a model for these images should take."""
        modes = {r.mode for r in self.records if r.ok}
        return 1 if modes and modes <= _GREY_MODES else 3

    def _roles(self, group: list[int]) -> set[str]:
        return {self.index.roles[i] for i in group if self.index.roles[i]}

    @property
    def leaks(self) -> list[dict[str, Any]]:
        """Groups (exact or near) whose copies sit in more than one split."""
        out = []
        for kind, groups in (("exact", self.exact_groups), ("near", self.near_groups)):
            out += [{"kind": kind, "splits": sorted(self._roles(g)), "files": self._files(g)}
                    for g in groups if len(self._roles(g)) > 1]  # fmt: skip
        return out

    @property
    def label_conflicts(self) -> list[dict[str, Any]]:
        """Identical files filed under different classes."""
        return [{"files": self._files(g)} for g in self.exact_groups if len({int(self.index.labels[i]) for i in g}) > 1]

    def _files(self, group: list[int]) -> list[dict[str, str]]:
        index = self.index
        return [{"path": index.relative(index.paths[i]), "class": index.class_names[index.labels[i]],
                 "split": index.roles[i] or "-"} for i in group]  # fmt: skip

    def class_counts(self) -> dict[str, dict[str, int]]:
        """Readable images per class, per split ("all" always; "train"/"val"/"test" when assigned)."""
        ok = np.array([r.ok for r in self.records], dtype=bool)
        roles = np.array(self.index.roles or [""] * len(ok))
        counts: dict[str, dict[str, int]] = {}
        for role in ("all", "train", "val", "test"):
            chosen = ok if role == "all" else ok & (roles == role)
            if role == "all" or chosen.any():
                per = np.bincount(self.index.labels[chosen], minlength=len(self.index.class_names))
                counts[role] = {name: int(c) for name, c in zip(self.index.class_names, per)}
        return counts

    @property
    def imbalance(self) -> float:
        """Largest class / smallest class (readable images, all splits); inf if a class has none left."""
        counts = list(self.class_counts()["all"].values())
        return max(counts) / min(counts) if min(counts) else float("inf")

    def to_dict(self) -> dict[str, Any]:
        good = [r for r in self.records if r.ok]
        sizes = np.array([(r.width, r.height) for r in good]).reshape(-1, 2)
        return {
            "source": self.source,
            "files": len(self.records),
            "readable": len(good),
            "classes": self.index.class_names,
            "class_counts": self.class_counts(),
            "imbalance_ratio": None if not np.isfinite(self.imbalance) else round(self.imbalance, 3),
            "bad_files": [{"path": self.index.relative(r.path), "kind": r.kind, "error": r.error} for r in self.bad],
            "skipped_not_images": [self.index.relative(p) for p in self.index.skipped],
            "exact_duplicates": [self._files(g) for g in self.exact_groups],
            "near_duplicates": [self._files(g) for g in self.near_groups],
            "near_threshold_bits": self.near_threshold,
            "leakage": self.leaks,
            "label_conflicts": self.label_conflicts,
            "sizes": {
                "min": sizes.min(0).tolist() if len(sizes) else None,
                "median": np.median(sizes, 0).astype(int).tolist() if len(sizes) else None,
                "max": sizes.max(0).tolist() if len(sizes) else None,
                "most_common": [[f"{w}x{h}", n] for (w, h), n in Counter(map(tuple, sizes.tolist())).most_common(5)],
            },
            "modes": dict(Counter(r.mode for r in good).most_common()),
            "formats": dict(Counter(r.format for r in good).most_common()),
            "channels": self.channels,
        }

    def summary_lines(self) -> list[str]:
        """The few lines training prints before it starts."""
        lines = [f"{len(self.records) - len(self.bad):,} readable images in {len(self.index.class_names)} classes"
                 f" (imbalance {self.imbalance:.1f}x)"]  # fmt: skip
        if self.bad:
            kinds = Counter(r.kind for r in self.bad)
            lines.append(f"{len(self.bad)} bad file(s) skipped: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
        if self.exact_groups:
            lines.append(f"{sum(len(g) - 1 for g in self.exact_groups)} exact duplicate(s)")
        if self.leaks:
            lines.append(f"warning: {len(self.leaks)} picture(s) appear in more than one split (leakage)")
            for leak in self.leaks[:5]:
                lines.append("  " + ", ".join(f"{f['path']} [{f['split']}]" for f in leak["files"]))
        if self.label_conflicts:
            lines.append(f"warning: {len(self.label_conflicts)} identical file(s) filed under different classes")
            for conflict in self.label_conflicts[:5]:  # named, so they can be found and fixed
                lines.append("  " + ", ".join(f"{f['path']} [{f['class']}]" for f in conflict["files"]))
        return lines


def build_report(source: str, index: ImageIndex, scan: ScanResult, near_threshold: int = NEAR_THRESHOLD) -> DataReport:
    """Duplicates, near duplicates and leakage from a scan of ``index``'s files."""
    ok = [i for i, r in enumerate(scan.records) if r.ok]
    by_content: dict[str, list[int]] = {}
    for i in ok:
        by_content.setdefault(scan.records[i].sha256, []).append(i)
    exact = sorted((g for g in by_content.values() if len(g) > 1), key=lambda g: g[0])
    # Near duplicates among distinct contents: one representative per identical group.
    heads = [g[0] for g in by_content.values()]
    hashes = np.array([scan.records[i].dhash for i in heads], dtype=np.uint64)
    pairs = [(heads[a], heads[b]) for a, b in near_duplicate_pairs(hashes, near_threshold)]
    near = []
    for group in _groups(len(scan.records), pairs):
        expanded = sorted({j for i in group for j in by_content[scan.records[i].sha256]})
        near.append(expanded)
    return DataReport(source, index, scan.records, exact, near, near_threshold)
