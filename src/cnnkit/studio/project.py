"""A studio project: a data folder (one sub-folder per class) and the studio's state inside it.

``PROJECT/<class>/*.png`` is exactly what ``cnnkit train --data PROJECT`` reads, and so is a project
laid out in splits, ``PROJECT/train/<class>/`` (with ``val/`` and ``test/`` beside it, under any
name the data layer takes: :func:`cnnkit.data.folders.split_folders`): a class is then its folders
in every split, a new class and new images go to the train split, relabelling keeps an image in its
split, and renaming or removing a class does it in each split. The studio keeps
its own state in ``PROJECT/.cnnkit-studio/`` (hidden, so never read as a class: thumbnails, the
change log, excluded images, jobs) and its runs in ``PROJECT/runs/`` (not a class either: see
:func:`cnnkit.data.folders.index_folder`). Every change the studio makes to the images is a move,
never a deletion: relabelling moves a file to another class folder, excluding moves it into
``.cnnkit-studio/excluded/<class>/``, and each change is one entry of the change log that
:meth:`Project.undo` reverses. Names that come from a request are checked before they touch a path.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit._io import atomic_write_bytes, atomic_write_json
from cnnkit.data.decode import MAX_PIXELS, is_image_path, open_image
from cnnkit.data.folders import SPLIT_NAMES, sort_classes, split_folders
from cnnkit.errors import CnnkitError

__all__ = ["STATE_DIR", "Project", "ProjectError", "check_class_name"]

STATE_DIR = ".cnnkit-studio"
RUNS = "runs"
# Folder names the data layer reads as something else than a class: runs, and the split folders.
RESERVED = {RUNS, *(name for names in SPLIT_NAMES.values() for name in names)}
_EXTENSION = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp",
              "PPM": ".ppm"}  # fmt: skip


class ProjectError(CnnkitError):
    """A request the project refuses (a bad name, a missing class): answered 4xx, nothing changed."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def check_class_name(name: str) -> str:
    """``name`` if it can be a class folder's name; :class:`ProjectError` if it names a path or a reserved folder."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise ProjectError("a class name is a non-empty name without leading or trailing spaces")
    if len(name) > 100:
        raise ProjectError("a class name has at most 100 characters")
    if re.search(r"[/\\\x00-\x1f:]", name) or name in (".", "..") or os.path.isabs(name):
        raise ProjectError(f"{name!r} is not a class name: a class name cannot contain / \\ : or name a path")
    if name.startswith((".", "__")):
        raise ProjectError(f"{name!r}: a class name cannot start with '.' or '__' (such folders are hidden)")
    if name.lower() in RESERVED:
        raise ProjectError(f"{name!r} is reserved ({', '.join(sorted(RESERVED))} mean runs or splits, not classes)")
    return name


def _safe_stem(filename: str) -> str:
    stem = Path(filename.replace("\\", "/")).name.rsplit(".", 1)[0]
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._")[:80]
    return stem or "image"


@dataclass(frozen=True)
class Move:
    """One file moved, as project-relative POSIX paths."""

    src: str
    dst: str


class Project:
    """The folder a studio works on; every method is safe to call from several request threads at once."""

    def __init__(self, root: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> None:
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise ProjectError(f"{self.root} is a file, not a project folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = self.root / STATE_DIR
        self.state.mkdir(exist_ok=True)
        self.max_pixels = max_pixels
        self._lock = threading.RLock()  # one change at a time: the log and the folders stay consistent
        self._listing: dict[str, tuple[int, list[str]]] = {}  # class -> (folder mtime_ns, sorted file names)

    # -- paths -------------------------------------------------------------------------
    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS

    @property
    def excluded_dir(self) -> Path:
        return self.state / "excluded"

    def resolve(self, relative: str) -> Path:
        """The file a project-relative path names; refused when it would lie outside the project."""
        if not isinstance(relative, str) or not relative or "\x00" in relative or os.path.isabs(relative):
            raise ProjectError(f"{relative!r} is not a path inside the project")
        path = (self.root / relative).resolve()
        if path != self.root and self.root not in path.parents:
            raise ProjectError(f"{relative!r} is not a path inside the project", 403)
        return path

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- layout ------------------------------------------------------------------------
    def splits(self) -> list[str]:
        """The split folders the classes live in, train first (``["train", "val", "test"]``, as named on
        disk); ``[""]`` when the classes are the project's own sub-folders."""
        found = split_folders(self.root)
        return [found[role].name for role in SPLIT_NAMES if role in found] or [""]

    def class_folders(self, name: str) -> list[Path]:
        """The folders of class ``name`` that exist, one per split (one, in a project without splits)."""
        check_class_name(name)
        return [folder for split in self.splits() if (folder := self.root / split / name).is_dir()]

    def class_dir(self, name: str, *, exists: bool = True) -> Path:
        """Where new images of class ``name`` go: its folder in the train split (or the project)."""
        folder = self.root / self.splits()[0] / check_class_name(name)
        if exists and not self.class_folders(name):
            raise ProjectError(f"no class {name!r} (classes: {', '.join(self.class_names()) or 'none yet'})", 404)
        return folder

    @staticmethod
    def _split_of(relative: str, splits: list[str]) -> str:
        """The split folder (one of ``splits``) a project-relative path lies in; "" in a project without splits."""
        first = relative.split("/", 1)[0]
        return first if first and first in splits else ""

    def image_path(self, relative: str) -> Path:
        """A class's image (``cls/file.png``) or an excluded one; anything else is refused."""
        path = self.resolve(relative)
        parts = path.relative_to(self.root).parts
        inside_class = len(parts) >= 2 and parts[0] not in (STATE_DIR, RUNS) and not parts[0].startswith(".")
        excluded = len(parts) >= 4 and parts[:2] == (STATE_DIR, "excluded")
        if not (inside_class or excluded) or not is_image_path(path):
            raise ProjectError(f"{relative!r} is not an image of the project", 403)
        if not path.is_file():
            raise ProjectError(f"{relative}: no such image", 404)
        return path

    # -- classes -----------------------------------------------------------------------
    def class_names(self) -> list[str]:
        names = set()
        for split in self.splits():
            for entry in os.scandir(self.root / split):
                if entry.is_dir() and not entry.name.startswith((".", "__")) and entry.name.lower() not in RESERVED:
                    names.add(entry.name)
        return sort_classes(list(names)) if names else []

    def images(self, name: str) -> list[str]:
        """A class's images as project-relative paths, split by split, sorted (cached until a folder changes)."""
        folders = self.class_folders(name)
        if not folders:
            self.class_dir(name)  # raises: no such class
        stamp = tuple((str(f), f.stat().st_mtime_ns) for f in folders)
        cached = self._listing.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        files = []
        for folder in folders:
            found = []
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
                base = self.relative(Path(dirpath))
                found += [f"{base}/{f}" for f in filenames if not f.startswith((".", "__")) and is_image_path(f)]
            files += sorted(found)
        self._listing[name] = (stamp, files)
        return files

    def classes(self) -> list[dict[str, Any]]:
        """Each class's name and image count; in a project with splits, its count in each split too."""
        splits = self.splits()
        listed = []
        for name in self.class_names():
            files = self.images(name)
            entry: dict[str, Any] = {"name": name, "count": len(files)}
            if splits != [""]:
                in_split = Counter(f.split("/", 1)[0] for f in files)  # an image's path starts with its split
                entry["splits"] = {s: in_split[s] for s in splits}
            listed.append(entry)
        return listed

    def create_class(self, name: str) -> None:
        """A new, empty class (in the train split of a project with splits)."""
        with self._lock:
            folder = self.class_dir(name, exists=False)
            if self.class_folders(name):
                raise ProjectError(f"class {name!r} exists already", 409)
            folder.mkdir()
            self._log("create", [], {"class": name, "folder": self.relative(folder)})

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class's folder in every split: one undoable change."""
        with self._lock:
            folders = self.class_folders(old) or [self.class_dir(old)]  # (the latter raises: no such class)
            check_class_name(new)
            if self.class_folders(new):
                raise ProjectError(f"class {new!r} exists already", 409)
            moves = []
            for folder in folders:
                os.rename(folder, folder.with_name(new))
                moves.append(Move(self.relative(folder), self.relative(folder.with_name(new))))
            self._log("rename", moves, {"class": new})

    def remove_class(self, name: str) -> dict[str, Any]:
        """Remove an empty class; a class with images has them moved to the excluded folder first (undoable)."""
        with self._lock:
            folders = self.class_folders(name) or [self.class_dir(name)]
            moves = [self._move(f, self._excluded_path(f)) for f in self.images(name)]
            leftovers = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
            if leftovers:  # files that are not images (notes.txt): never deleted, so the folder stays
                self._log("exclude", moves, {"class": name})
                raise ProjectError(f"{name}: its images were excluded, but the folder holds {len(leftovers)} other "
                                   f"file(s) ({self.relative(leftovers[0])}...), so it stays", 409)  # fmt: skip
            for folder in folders:
                for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
                    sub.rmdir()
                folder.rmdir()
            return self._log("remove", moves, {"class": name, "folders": [self.relative(f) for f in folders]})

    # -- images ------------------------------------------------------------------------
    def add_image(self, name: str, filename: str, data: bytes) -> str:
        """Check that ``data`` is an image (cnnkit's decoder, the pixel limit) and write it into class ``name``."""
        folder = self.class_dir(name)
        decoded = open_image(data, name=filename, max_pixels=self.max_pixels)  # ImageError for anything else
        extension = _EXTENSION.get(decoded.format, ".png")
        stem = _safe_stem(filename)
        with self._lock:
            folder.mkdir(exist_ok=True)  # a class of a project with splits that has no train folder yet
            path = folder / f"{stem}{extension}"
            n = 1
            while path.exists():
                n += 1
                path = folder / f"{stem}-{n}{extension}"
            atomic_write_bytes(path, data)
        return self.relative(path)

    def move_images(self, paths: list[str], to: str | None) -> dict[str, Any]:
        """Relabel images into class ``to``, or exclude them (``to`` None); one undoable change."""
        with self._lock:
            if to is not None:
                self.class_dir(to)  # the class must exist (in some split)
            sources = [self.image_path(p) for p in paths]
            splits, moves = self.splits(), []
            for src in sources:
                rel = self.relative(src)
                # relabelled within its split: a test image stays a test image
                target = self.root / self._split_of(rel, splits) / to if to is not None else None
                dst = self._free(target / src.name) if target is not None else self._excluded_path(rel)
                moves.append(self._move(rel, dst))
            return self._log("relabel" if to is not None else "exclude", moves, {"class": to})

    def restore_images(self, paths: list[str]) -> dict[str, Any]:
        """Excluded images back into their class folders."""
        with self._lock:
            splits, moves = self.splits(), []
            for rel in paths:
                src = self.image_path(rel)
                parts = src.relative_to(self.excluded_dir).parts  # ([split,] class, ..., file)
                split = self._split_of("/".join(parts), splits) if len(parts) > 2 else ""
                check_class_name(parts[1 if split else 0])
                moves.append(self._move(rel, self._free(self.root.joinpath(*parts))))
            return self._log("restore", moves, {})

    def excluded(self) -> list[str]:
        if not self.excluded_dir.is_dir():
            return []
        return sorted(self.relative(p) for p in self.excluded_dir.rglob("*") if p.is_file() and is_image_path(p))

    def keep(self, paths: list[str]) -> dict[str, Any]:
        """Mark images as reviewed and right: they leave the lists of mistakes to look at."""
        with self._lock:
            kept = set(self.kept()) | {self.relative(self.image_path(p)) for p in paths}
            atomic_write_json(self.state / "kept.json", sorted(kept))
            return self._log("keep", [], {"paths": list(paths)})

    def kept(self) -> list[str]:
        path = self.state / "kept.json"
        return json.loads(path.read_text()) if path.exists() else []

    # -- the change log ----------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.state / "changes.jsonl"

    def changes(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def undo(self) -> dict[str, Any]:
        """Reverse the last change not yet undone; :class:`ProjectError` when there is none."""
        with self._lock:
            entries = self.changes()
            undone = {e["undoes"] for e in entries if e.get("undoes")}
            todo = [e for e in entries if not e.get("undoes") and e["id"] not in undone]
            if not todo:
                raise ProjectError("nothing to undo", 409)
            entry = todo[-1]
            kind = entry["kind"]
            if kind == "create":
                folder = self.root / entry.get("folder", entry["class"])  # (older logs: the class's name)
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
                elif folder.is_dir():
                    raise ProjectError(f"class {entry['class']!r} holds images now: remove them first", 409)
            elif kind == "rename":
                for move in reversed(entry["moves"]):  # one folder per split
                    check_class_name(Path(move["src"]).name)
                    os.rename(self.root / move["dst"], self.root / move["src"])
            elif kind == "keep":
                kept = set(self.kept()) - set(entry.get("paths", []))
                atomic_write_json(self.state / "kept.json", sorted(kept))
            if kind == "remove":
                for folder in entry.get("folders", [entry["class"]]):
                    (self.root / folder).mkdir(parents=True, exist_ok=True)
            for move in reversed(entry["moves"] if kind != "rename" else []):
                src, dst = self.root / move["dst"], self.root / move["src"]
                if not src.is_file():
                    raise ProjectError(f"cannot undo: {move['dst']} is gone", 409)
                if dst.exists():
                    raise ProjectError(f"cannot undo: {move['src']} exists again", 409)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.rename(src, dst)
            return self._log("undo", [], {"undoes": entry["id"], "what": kind})

    def _log(self, kind: str, moves: list[Move], extra: dict[str, Any]) -> dict[str, Any]:
        entry = {"id": uuid.uuid4().hex[:12], "time": time.time(), "kind": kind,
                 "moves": [{"src": m.src, "dst": m.dst} for m in moves], **extra}  # fmt: skip
        # The whole log is rewritten atomically (a crash never leaves half a line); it stays small.
        lines = self.log_path.read_text() if self.log_path.exists() else ""
        atomic_write_bytes(self.log_path, (lines + json.dumps(entry) + "\n").encode())
        return entry

    def _move(self, rel: str, dst: Path) -> Move:
        src = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)  # same file system: atomic, and the bytes are never copied or deleted
        return Move(rel, self.relative(dst))

    def _excluded_path(self, rel: str) -> Path:
        return self._free(self.excluded_dir / rel)

    @staticmethod
    def _free(path: Path) -> Path:
        """``path``, or ``name-2.ext``... when it is taken."""
        n, candidate = 1, path
        while candidate.exists():
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        return candidate
