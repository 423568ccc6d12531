"""Episodes: a query image (+ optional ground truth), K supports with masks, an optional region R.

On disk an episode is a folder with ``episode.json`` and PNGs (format version 1)::

    {"format": "fssgui-episode", "version": 1, "class_name": "person",
     "query": {"image": "query.png", "mask": "query_mask.png" | null},
     "supports": [{"image": "support_0.png", "mask": "support_0_mask.png"}, ...],
     "region": "region.png" | null,
     "notes": "NOTES.md" | null}

Paths are relative to the folder and may not leave it. Masks are single-channel PNGs,
0 = background, 255 (or 1) = foreground. ``query.mask`` is the optional ground truth; ``region``
is the optional query region R to explain. :func:`load_episode` validates everything and raises
one :class:`EpisodeError` naming the file and the problem; :func:`save_episode` is atomic.

Notes: ``notes`` names a UTF-8 text file (Markdown) saying what the episode is about; it is
optional, so version 1 readers that predate it ignore it. A folder whose ``episode.json`` has no
``notes`` key (older folders, the demo episodes) gets its notes from ``NOTES.md`` when that file
is there. :func:`save_episode` writes the episode's notes to ``NOTES.md`` (or none when empty).

Saving over an existing episode folder replaces what the episode owns (``episode.json``,
``NOTES.md`` and every file the old ``episode.json`` names) and keeps every other file and
folder the user put there (hard-linked into the new folder, copied where links are not
possible), so re-saving never deletes the user's own files. Saving over a folder that holds
files but is not an episode folder is refused.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import EpisodeError
from .imaging import ImageError, load_mask, load_rgb, normalise, resize_image, resize_mask
from .io import recover_replaced_folder, replace_folder_atomic, save_png_atomic, write_bytes_atomic

FORMAT = "fssgui-episode"
VERSION = 1
EPISODE_FILE = "episode.json"
NOTES_FILE = "NOTES.md"
MAX_NOTES_BYTES = 1024 * 1024  # notes are a page of text, not a data store
MAX_SPEC_BYTES = 1024 * 1024  # episode.json lists a few file names


@dataclass
class Support:
    image: np.ndarray  # [H, W, 3] uint8 RGB
    mask: np.ndarray  # [H, W] bool

    def copy(self) -> "Support":
        return Support(self.image.copy(), self.mask.copy())


@dataclass
class Episode:
    query_image: np.ndarray  # [H, W, 3] uint8 RGB
    supports: list[Support]
    class_name: str = ""
    query_mask: Optional[np.ndarray] = None  # [H, W] bool ground truth
    region: Optional[np.ndarray] = None  # [H, W] bool region R to explain
    folder: Optional[Path] = field(default=None, compare=False)
    notes: str = ""  # free text (Markdown) about the episode, saved as NOTES.md

    @property
    def shots(self) -> int:
        return len(self.supports)

    @property
    def query_size(self) -> tuple[int, int]:
        return int(self.query_image.shape[0]), int(self.query_image.shape[1])

    def copy(self) -> "Episode":
        return Episode(
            self.query_image.copy(),
            [s.copy() for s in self.supports],
            self.class_name,
            None if self.query_mask is None else self.query_mask.copy(),
            None if self.region is None else self.region.copy(),
            self.folder,
            self.notes,
        )

    def validate(self, where: str = "episode") -> None:
        """Check shapes and contents; raise :class:`EpisodeError` naming ``where`` on a problem."""
        if not self.supports:
            raise EpisodeError(f"{where}: the episode has no supports (K = 0); add at least one")
        _check_image(self.query_image, f"{where}: query image")
        for name, mask in (("query mask", self.query_mask), ("region", self.region)):
            if mask is not None and mask.shape != self.query_image.shape[:2]:
                raise EpisodeError(
                    f"{where}: {name} is {_size(mask)} but the query image is {_size(self.query_image)}"
                )
        for i, support in enumerate(self.supports):
            _check_image(support.image, f"{where}: support {i} image")
            if support.mask.shape != support.image.shape[:2]:
                raise EpisodeError(
                    f"{where}: support {i} mask is {_size(support.mask)} but its image is {_size(support.image)}"
                )
            if not support.mask.any():
                raise EpisodeError(f"{where}: support {i} mask is empty (no foreground pixel)")


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


def _check_image(image: np.ndarray, what: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise EpisodeError(f"{what} must be RGB uint8 [H, W, 3], got {image.dtype} {image.shape}")


# ------------------------------------------------------------------------------------- loading
def _resolve(folder: Path, relative, json_path: Path, what: str) -> Path:
    if not isinstance(relative, str) or not relative:
        raise EpisodeError(f"{json_path}: {what} must be a relative path string")
    if "\x00" in relative:
        raise EpisodeError(f"{json_path}: {what} path {relative!r} holds a NUL character")
    if os.path.isabs(relative) or Path(relative).anchor:
        raise EpisodeError(f"{json_path}: {what} path {relative!r} must be relative to the episode folder")
    try:  # symbolic links are followed before the check, so a link cannot lead out either
        path = (folder / relative).resolve()
        inside = path.is_relative_to(folder.resolve())
        found = inside and path.is_file()
    except (OSError, RuntimeError) as exc:  # a name too long, a link loop...
        raise EpisodeError(f"{json_path}: {what} path {relative!r} cannot be followed "
                           f"({getattr(exc, 'strerror', None) or exc})") from None
    if not inside:
        raise EpisodeError(f"{json_path}: {what} path {relative!r} escapes the episode folder")
    if not found:
        raise EpisodeError(f"{path}: {what} file not found (named in {json_path.name})")
    return path


def _read_image(path: Path) -> np.ndarray:
    try:
        return load_rgb(path)
    except ImageError as exc:
        raise EpisodeError(str(exc)) from None


def _read_mask(path: Path, image_shape, what: str) -> np.ndarray:
    try:
        mask = load_mask(path)
    except ImageError as exc:
        raise EpisodeError(str(exc)) from None
    if mask.shape != tuple(image_shape[:2]):
        turned = mask.shape == tuple(image_shape[:2])[::-1]
        raise EpisodeError(
            f"{path}: {what} is {mask.shape[1]}x{mask.shape[0]} but its image is {image_shape[1]}x{image_shape[0]}"
            + (" (turned by a quarter: fssgui uses the image's pixels as stored, it ignores an EXIF rotation)"
               if turned else "")
        )
    return mask


def _read_spec(json_path: Path) -> dict:
    """``episode.json`` parsed and its header checked (one :class:`EpisodeError` for any problem)."""
    try:
        if not json_path.is_file():
            raise EpisodeError(f"{json_path}: episode file not found")
        size = json_path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise EpisodeError(f"{json_path}: {size} bytes is too large for an episode file "
                               f"(at most {MAX_SPEC_BYTES} are read)")
        spec = json.loads(json_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EpisodeError(f"{json_path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise EpisodeError(f"{json_path}: not valid JSON (nested too deeply)") from None
    except (OSError, ValueError) as exc:
        raise EpisodeError(f"{json_path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise EpisodeError(f"{json_path}: not an fssgui episode (\"format\" must be {FORMAT!r})")
    version = spec.get("version")
    if type(version) is not int or version != VERSION:  # not true, not 1.0
        raise EpisodeError(
            f"{json_path}: unknown episode format version {version!r} (this fssgui reads version {VERSION})"
        )
    return spec


def load_episode(path: str | Path, *, allow_incomplete: bool = False) -> Episode:
    """Load an episode folder (or its ``episode.json``), validating everything.

    ``allow_incomplete`` accepts what an editing session may hold (no supports, empty support
    masks), for the app's autosave snapshots; everything else is still checked."""
    path = Path(path)
    recover_replaced_folder(path)  # a save killed between its two renames (systems without an exchange)
    json_path = path / EPISODE_FILE if path.is_dir() else path
    spec = _read_spec(json_path)
    folder = json_path.parent
    class_name = spec.get("class_name", "")
    if not isinstance(class_name, str):
        raise EpisodeError(f"{json_path}: class_name must be a string")
    query = spec.get("query")
    if not isinstance(query, dict):
        raise EpisodeError(f"{json_path}: \"query\" must be an object with \"image\" and \"mask\"")
    query_image = _read_image(_resolve(folder, query.get("image"), json_path, "query image"))
    query_mask = None
    if query.get("mask") is not None:
        query_mask = _read_mask(
            _resolve(folder, query["mask"], json_path, "query mask"), query_image.shape, "query mask"
        )
    supports_spec = spec.get("supports")
    if not isinstance(supports_spec, list):
        raise EpisodeError(f"{json_path}: \"supports\" must be a list")
    if not supports_spec and not allow_incomplete:
        raise EpisodeError(f"{json_path}: the episode has no supports (K = 0); add at least one")
    supports = []
    for i, item in enumerate(supports_spec):
        if not isinstance(item, dict):
            raise EpisodeError(f"{json_path}: support {i} must be an object with \"image\" and \"mask\"")
        image = _read_image(_resolve(folder, item.get("image"), json_path, f"support {i} image"))
        mask_path = _resolve(folder, item.get("mask"), json_path, f"support {i} mask")
        mask = _read_mask(mask_path, image.shape, f"support {i} mask")
        if not mask.any() and not allow_incomplete:
            raise EpisodeError(f"{mask_path}: support {i} mask is empty (no foreground pixel)")
        supports.append(Support(image, mask))
    region = None
    if spec.get("region") is not None:
        region = _read_mask(_resolve(folder, spec["region"], json_path, "region"), query_image.shape, "region")
    return Episode(query_image, supports, class_name, query_mask, region, folder, _read_notes(folder, spec, json_path))


def _read_notes(folder: Path, spec: dict, json_path: Path) -> str:
    """The episode's notes: the file ``spec["notes"]`` names (strict UTF-8), none when it is
    null, or ``NOTES.md`` when the key is absent (folders written before notes were saved; read
    leniently, undecodable bytes replaced, so such a folder always loads)."""
    if "notes" in spec:
        if spec["notes"] is None:
            return ""
        path, strict = _resolve(folder, spec["notes"], json_path, "notes"), True
    else:
        path, strict = folder / NOTES_FILE, False
        if not path.is_file():
            return ""
    try:
        size = path.stat().st_size
        if size > MAX_NOTES_BYTES:
            raise EpisodeError(f"{path}: notes file is {size} bytes (at most {MAX_NOTES_BYTES} are read)")
        data = path.read_bytes()
    except OSError as exc:
        raise EpisodeError(f"{path}: cannot read the notes ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig" if strict else "utf-8")
    except UnicodeDecodeError as exc:
        if strict:
            raise EpisodeError(f"{path}: notes are not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        return data.decode("utf-8", errors="replace")


# -------------------------------------------------------------------------------------- saving
def save_episode(episode: Episode, folder: str | Path) -> Path:
    """Write ``episode`` as a version-1 folder. Atomic: everything is written to a temporary
    folder beside ``folder`` and swapped in by :func:`fssgui.io.replace_folder`, so a crash
    (or a kill) leaves either the old or the new episode, never a mix. Returns the path of
    ``episode.json``."""
    episode.validate(str(folder))
    given = folder = Path(folder)
    if folder.is_symlink():  # replace the folder the link points to and keep the link
        folder = folder.resolve()
    recover_replaced_folder(folder)
    _check_save_target(folder)

    def fill(tmp: Path) -> None:
        write_episode_files(episode, tmp)
        if folder.is_dir():
            _carry_over(folder, tmp, "", _owned_paths(folder))

    replace_folder_atomic(folder, fill)
    episode.folder = given
    return given / EPISODE_FILE


def _check_save_target(folder: Path) -> None:
    """Refuse to replace a file, or a folder with files that is not an episode folder."""
    if folder.exists() and not folder.is_dir():
        raise EpisodeError(f"{folder}: exists and is not a folder; choose a new or empty folder for the episode")
    if folder.is_dir() and not (folder / EPISODE_FILE).is_file():
        try:
            has_files = next(os.scandir(folder), None) is not None
        except OSError as exc:
            raise EpisodeError(f"{folder}: cannot read the folder ({exc.strerror or exc})") from None
        if has_files:
            raise EpisodeError(f"{folder}: the folder holds files but no {EPISODE_FILE}; saving an episode there "
                               "would mix it with them: choose a new or empty folder")


def _owned_paths(folder: Path) -> set[str]:
    """Relative paths (POSIX) an existing episode folder's episode owns: replaced, not kept, on save."""
    owned = {EPISODE_FILE, NOTES_FILE}
    try:
        spec = json.loads((folder / EPISODE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return owned
    if not isinstance(spec, dict):
        return owned
    named: list = [spec.get("region"), spec.get("notes")]
    query = spec.get("query")
    if isinstance(query, dict):
        named += [query.get("image"), query.get("mask")]
    supports = spec.get("supports")
    if isinstance(supports, list):
        for item in supports:
            if isinstance(item, dict):
                named += [item.get("image"), item.get("mask")]
    for relative in named:
        if isinstance(relative, str) and relative and not os.path.isabs(relative):
            normal = os.path.normpath(relative)
            if not normal.startswith(".."):
                owned.add(Path(normal).as_posix())
    return owned


def _link_or_copy(source: str, target: Path) -> None:
    try:
        os.link(source, target)  # same file system (the new folder is created beside the old): no copy
    except OSError:
        shutil.copy2(source, target)


def _carry_over(source: Path, target: Path, prefix: str, owned: set[str]) -> None:
    """Bring every entry of ``source`` that the episode does not own into ``target`` (recursively;
    what the new episode wrote wins; symbolic links are kept as links, not followed)."""
    with os.scandir(source) as entries:
        for entry in entries:
            relative = prefix + entry.name
            destination = target / entry.name
            if relative in owned or os.path.lexists(destination):
                continue
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), destination)
            elif entry.is_dir():
                destination.mkdir()
                _carry_over(Path(entry.path), destination, relative + "/", owned)
                shutil.copystat(entry.path, destination)
            else:
                _link_or_copy(entry.path, destination)


def write_episode_files(episode: Episode, folder: Path) -> None:
    """Write the PNGs and ``episode.json`` of ``episode`` into the existing ``folder`` (each file
    atomically, no validation). :func:`save_episode` calls it on a temporary folder."""
    spec = {
        "format": FORMAT,
        "version": VERSION,
        "class_name": episode.class_name,
        "query": {"image": "query.png", "mask": None},
        "supports": [],
        "region": None,
        "notes": None,
    }
    save_png_atomic(folder / "query.png", episode.query_image)
    if episode.query_mask is not None:
        save_png_atomic(folder / "query_mask.png", episode.query_mask.astype(bool))
        spec["query"]["mask"] = "query_mask.png"
    for i, support in enumerate(episode.supports):
        save_png_atomic(folder / f"support_{i}.png", support.image)
        save_png_atomic(folder / f"support_{i}_mask.png", support.mask.astype(bool))
        spec["supports"].append({"image": f"support_{i}.png", "mask": f"support_{i}_mask.png"})
    if episode.region is not None:
        save_png_atomic(folder / "region.png", episode.region.astype(bool))
        spec["region"] = "region.png"
    if episode.notes:
        write_bytes_atomic(folder / NOTES_FILE, episode.notes.encode("utf-8"))
        spec["notes"] = NOTES_FILE
    write_bytes_atomic(folder / EPISODE_FILE, (json.dumps(spec, indent=2) + "\n").encode("utf-8"))


# ------------------------------------------------------------------------------ to the model
def episode_to_tensors(episode: Episode, entry):
    """The episode at the model's input size S as an :class:`EpisodeTensors` with B = 1.

    Images are resized directly to S x S (cv2 INTER_LINEAR, aspect ratio not kept, like the
    official loaders) and normalised with the model's mean/std; masks are resized nearest."""
    import torch

    from .models.base import EpisodeTensors

    size = (entry.input_size, entry.input_size)
    query = normalise(resize_image(episode.query_image, size), entry.mean, entry.std)
    supports = torch.stack(
        [normalise(resize_image(s.image, size), entry.mean, entry.std) for s in episode.supports]
    )
    masks = torch.stack([torch.from_numpy(resize_mask(s.mask, size)).float() for s in episode.supports])
    return EpisodeTensors(query[None], supports[None], masks[None])

