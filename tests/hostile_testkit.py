"""Shared pieces of the hostile-input tests (test_hostile_*.py): hypothesis settings, a fresh
folder per example, the one-line-message check and hand-made image files."""
from __future__ import annotations

import io
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from PIL import Image

#: modest example counts (the whole hostile suite stays well under a minute on 2 slow cores)
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

REPO = Path(__file__).resolve().parent.parent


def fresh_folder(base: Path) -> Path:
    """A new empty folder under ``base`` (one per hypothesis example)."""
    return Path(tempfile.mkdtemp(dir=str(base)))


def assert_one_line_naming(error: BaseException | str, *paths) -> str:
    """The message (of an error, or given) is one line and names at least one of ``paths``;
    returns it."""
    message = str(error)
    assert message and "\n" not in message, repr(message)
    assert "Traceback" not in message
    assert any(str(p) in message for p in paths), (message, paths)
    return message


def damaged_file(base: Path, name: str, raw: bytes, data) -> Path:
    """A new file ``name`` (in a fresh folder under ``base``) holding :func:`damaged` ``raw``."""
    path = fresh_folder(base) / name
    path.write_bytes(damaged(raw, data))
    return path


def damaged(raw: bytes, data, hows=("cut", "flip", "junk", "empty", "whole")) -> bytes:
    """``raw`` cut at a drawn byte, with one byte flipped, replaced by junk, emptied or kept whole
    (``data``: hypothesis's ``st.data()``)."""
    from hypothesis import strategies as st

    how = data.draw(st.sampled_from(hows))
    if how == "cut":
        return raw[:data.draw(st.integers(0, len(raw) - 1))]
    if how == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:]
    if how == "junk":
        return data.draw(st.binary(max_size=80))
    return b"" if how == "empty" else raw


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG whose header declares ``width`` x ``height`` grey pixels (a
    decompression bomb's header; its pixel data is one compressed row)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF header is rewritten to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encoded(array: np.ndarray, fmt: str, mode: str | None = None, **options) -> bytes:
    """``array`` encoded by Pillow in ``fmt`` (after converting to ``mode`` when given)."""
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def cli(*argv, timeout: float = 120):
    """``python -m fssgui.cli ARGV`` in a subprocess with this checkout first on the path."""
    import os
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "fssgui.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(REPO))
    return proc.returncode, proc.stdout, proc.stderr
