"""A tiny synthetic LLaVA-format data set (solid-colour PNGs and short conversations), written
offline in milliseconds; used by tests, the training benchmark and smoke runs.

    python -m llava.data.toy --output-dir DIR   # DIR/data.json, DIR/images/
"""

from __future__ import annotations

import argparse
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def image_record(i: int, colour: str, image: str | list[str], turns: int = 1) -> dict:
    """A conversation about one image (or several, given a list): `turns` question/answer pairs."""
    conversations = [
        {"from": "human", "value": "What is in the image?\n<image>"},
        {"from": "gpt", "value": f"A {colour} square."},
    ]
    for _ in range(turns - 1):
        conversations += [
            {"from": "human", "value": "Is there a red circle?"},
            {"from": "gpt", "value": "yes" if colour == "red" else "no"},
        ]
    return {"id": f"img-{i}", "image": image, "conversations": conversations}


def text_record(i: int) -> dict:
    """A text-only conversation."""
    return {
        "id": f"txt-{i}",
        "conversations": [
            {"from": "human", "value": "How many squares are there?"},
            {"from": "gpt", "value": "three"},
        ],
    }


def toy_records(n: int = 24, text_every: int = 4) -> tuple[list[dict], dict[str, str]]:
    """`n` records, mostly two-turn conversations about one image, every `text_every`-th
    text-only; and the images they need (file name -> colour)."""
    records, images = [], {}
    names = list(COLOURS)
    for i in range(n):
        if i % text_every == text_every - 1:
            records.append(text_record(i))
            continue
        colour = names[i % len(names)]
        images[f"{i}.png"] = colour
        records.append(image_record(i, colour, f"{i}.png", turns=2))
    return records, images


def write_dataset(root: str | Path, records: list, images: dict[str, str] | None = None) -> tuple[str, str]:
    """Write `images` (file name -> colour) and `records`; return `(json_path, image_folder)`."""
    root = Path(root)
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in (images or {}).items():
        Image.new("RGB", (40, 32), COLOURS[colour]).save(folder / name)
    path = root / "data.json"
    path.write_text(json.dumps(records))
    return str(path), str(folder)


def write_broken_dataset(root: str | Path) -> tuple[str, str]:
    """Good records plus three bad ones, for the skip path: a missing image (record 1), a
    truncated PNG (record 2) and a malformed record (3)."""
    records = [
        image_record(0, "red", "0.png"),
        image_record(1, "blue", "missing.png"),
        image_record(2, "green", "truncated.png"),
        {"id": "broken", "conversations": [{"from": "gpt", "value": "no question"}]},
        image_record(4, "blue", "4.png"),
        text_record(5),
        image_record(6, "green", "6.png", turns=2),
        image_record(7, "red", "0.png"),
    ]
    path, folder = write_dataset(
        root, records, {"0.png": "red", "4.png": "blue", "6.png": "green", "truncated.png": "green"}
    )
    png = Path(folder, "truncated.png")
    png.write_bytes(png.read_bytes()[:60])
    return path, folder


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG built chunk by chunk (https://www.w3.org/TR/png/) around `idat`, its compressed
    filtered scanlines (a filter byte, then the pixels, per row)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def write_raw_png(
    path: str | Path, width: int, height: int, bit_depth: int, colour_type: int, rows: bytes
) -> None:
    """A PNG for files Pillow does not write: 16-bit RGB(A), and decompression bombs (a huge
    declared size over a few bytes of `rows`, the filtered scanlines, uncompressed)."""
    Path(path).write_bytes(raw_png(width, height, bit_depth, colour_type, zlib.compress(rows)))


def grey_png(width: int, height: int) -> bytes:
    """A valid black 8-bit greyscale PNG of `width` x `height`, compressed row by row: small in
    memory and on the wire (12000 x 12000, 144 Mpx, is 140 KB), huge once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0, then the row's pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return raw_png(width, height, 8, 0, idat)


def write_png16(path: str | Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG of `pixels` (`uint16`, `[H, W]` greyscale, `[H, W, 3]` RGB or `[H, W, 4]` RGBA)."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    colour_type = {1: 0, 3: 2, 4: 6}[channels]  # greyscale, RGB, RGBA
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    write_raw_png(path, pixels.shape[1], pixels.shape[0], 16, colour_type, rows)


def write_bomb_png(path: str | Path, side: int = 20_000) -> None:
    """A PNG declaring `side` x `side` greyscale pixels (400 Mpx by default, over twice Pillow's
    limit) in a few hundred bytes: what a decompression-bomb check must refuse unopened."""
    write_raw_png(path, side, side, 1, 0, b"\x00" * 64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-records", type=int, default=24)
    args = parser.parse_args(argv)
    write_dataset(args.output_dir, *toy_records(args.num_records))


if __name__ == "__main__":
    main()
