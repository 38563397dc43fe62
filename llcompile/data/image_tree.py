"""Image-folder trees (``train/<class>/*``, ``test/<class>/*``) in a folder or a zip: which files, which labels.

Class indices follow the sorted class-folder names of the train split. Each split is listed in
round-robin class order (the first file of every class, then the second, ...), so that the first
``limit`` samples cover every class and a limited load is a prefix of the full one.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llcompile.errors import DataError
from llcompile.util.paths import inside

SPLITS = ("train", "test")
TREE_LAYOUT = "train/<class>/* and test/<class>/*"


@dataclass(frozen=True)
class TreeSource:
    """Where a tree's files are: small enough to hand to a decoding process."""

    path: Path  # the tree's root folder, or the zip file
    is_zip: bool

    def describe(self, member: str) -> str:
        """How error messages name one file of the tree."""
        return f"{member} in {self.path}" if self.is_zip else member

    @contextmanager
    def reader(self) -> Iterator[Callable[[str], bytes]]:
        """A function from member (file path or zip member name) to its bytes, valid inside the block."""
        if not self.is_zip:
            yield lambda member: self._read(Path(member).read_bytes, member)
            return
        with _open_zip(self.path) as archive:
            yield lambda member: self._read(lambda: archive.read(member), member)

    def _read(self, read: Callable[[], bytes], member: str) -> bytes:
        try:
            return read()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
            raise DataError(f"cannot read {self.describe(member)}: {error}") from None


@dataclass(frozen=True)
class ImageTree:
    source: TreeSource
    classes: list[str]
    # split -> [(member, label)]: a file path (folder) or a member name (zip), in round-robin order
    members: dict[str, list[tuple[str, int]]]


def is_folder_tree(folder: Path) -> bool:
    return all((folder / split).is_dir() for split in SPLITS)


def list_folder_tree(root: Path) -> ImageTree:
    relative_paths = {}
    for split in SPLITS:
        for directory, subdirs, files in os.walk(root / split):
            subdirs[:] = [d for d in subdirs if not _is_hidden(d)]
            for file in files:
                if not _is_hidden(file):
                    relative = (Path(directory) / file).relative_to(root).as_posix()
                    relative_paths[relative] = str(inside(root, relative, "the image"))
    return _build_tree(root, False, relative_paths)


def list_zip_tree(zip_path: Path) -> ImageTree:
    with _open_zip(zip_path) as archive:
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
    names = [name for name in names if not any(_is_hidden(part) for part in name.split("/"))]
    prefix = _tree_prefix(names)
    if prefix is None:
        raise DataError(
            f"{zip_path} holds no image-folder tree: expected {TREE_LAYOUT}, at the top of the zip "
            "or under one top-level folder"
        )
    relative_paths = {name[len(prefix):]: name for name in names if name.startswith(prefix)}
    return _build_tree(zip_path, True, relative_paths)


@contextmanager
def _open_zip(zip_path: Path) -> Iterator[zipfile.ZipFile]:
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"cannot read {zip_path} as a zip: {error}") from None
    with archive:
        yield archive


def _is_hidden(name: str) -> bool:
    # dot-files and the resource forks macOS adds to the zips it writes
    return name.startswith(".") or name == "__MACOSX"


def _tree_prefix(names: list[str]) -> str | None:
    """'' when train/ and test/ are at the top of the zip, 'top/' when under one folder; else None."""
    tops = {name.split("/", 1)[0] for name in names}
    prefix = f"{tops.pop()}/" if len(tops) == 1 and not tops & set(SPLITS) else ""
    split_folders = {name[len(prefix):].split("/", 1)[0] for name in names if name.startswith(prefix)}
    return prefix if split_folders >= set(SPLITS) else None


def _build_tree(source: Path, is_zip: bool, relative_paths: dict[str, str]) -> ImageTree:
    """Group files by split and class (files directly under train/ or test/ belong to no class)."""
    by_split: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    for relative in sorted(relative_paths):
        parts = relative.split("/")
        if len(parts) >= 3 and parts[0] in by_split:
            by_split[parts[0]].setdefault(parts[1], []).append(relative_paths[relative])
    classes = sorted(by_split["train"])
    for split in SPLITS:
        if not by_split[split]:
            raise DataError(f"{source} has no images in {split}/<class>/ (expected {TREE_LAYOUT})")
    unknown = sorted(set(by_split["test"]) - set(classes))
    if unknown:
        raise DataError(f"{source}: test class folder '{unknown[0]}' has no train/ counterpart")
    members = {split: _round_robin(by_split[split], classes) for split in SPLITS}
    return ImageTree(TreeSource(source, is_zip), classes, members)


def _round_robin(files_by_class: dict[str, list[str]], classes: list[str]) -> list[tuple[str, int]]:
    columns = [files_by_class.get(name, []) for name in classes]
    longest = max(len(files) for files in columns)
    return [
        (files[index], label)
        for index in range(longest)
        for label, files in enumerate(columns)
        if index < len(files)
    ]


def tree_fingerprints(tree: ImageTree) -> list:
    """Path, size and mtime of every listed file: an edited, added or removed image changes it."""
    return [_stat_entry(member) for split in SPLITS for member, _ in tree.members[split]]


def _stat_entry(path: str) -> list:
    stat = os.stat(path)
    return [path, stat.st_size, stat.st_mtime_ns]

