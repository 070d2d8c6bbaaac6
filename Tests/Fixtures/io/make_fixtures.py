#!/usr/bin/env python3
"""Regenerates the tiny I/O fixtures used by Tests/TarFlowTests/IOTests.swift.

Run from this folder: `python3 make_fixtures.py [path/to/mnist]`. Needs numpy only; the PNG files
are assembled by hand (zlib + struct) so that every colour type and bit depth is exactly what the
file name says. The MNIST head is taken from the t10k files when their folder is given.
"""
import gzip
import os
import struct
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def out(name):
    return os.path.join(HERE, name)


# ---------------------------------------------------------------- npy

def npy_fixtures():
    np.save(out("f4_2x3.npy"), np.array([[1.5, -2.0, 3.25], [0.0, -0.0, 1e-8]], dtype="<f4"))
    np.save(out("f8_scalar.npy"), np.array(3.141592653589793, dtype="<f8"))
    np.save(out("u1_5.npy"), np.array([0, 1, 127, 128, 255], dtype=np.uint8))
    np.save(out("i4_3.npy"), np.array([-2147483648, 0, 2147483647], dtype="<i4"))
    np.save(out("i8_2x1x2x2.npy"), np.arange(-4, 4, dtype="<i8").reshape(2, 1, 2, 2) * 1_000_000_000_000)
    np.save(out("f4_empty_0x3.npy"), np.zeros((0, 3), dtype="<f4"))
    np.save(out("f4_be_2.npy"), np.array([1.0, -0.5], dtype=">f4"))
    with open(out("f4_fortran_2x3.npy"), "wb") as f:
        np.lib.format.write_array(f, np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
    with open(out("f4_v2_2x2.npy"), "wb") as f:
        np.lib.format.write_array(f, np.arange(4, dtype="<f4").reshape(2, 2), version=(2, 0))
    with open(out("i8_v3_3.npy"), "wb") as f:
        np.lib.format.write_array(f, np.array([5, -6, 7], dtype="<i8"), version=(3, 0))


# ---------------------------------------------------------------- png

def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def pack_row(samples, bit_depth):
    """Packs one row of integer samples at the given bit depth (MSB first)."""
    if bit_depth == 8:
        return bytes(samples)
    if bit_depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    per_byte = 8 // bit_depth
    row = bytearray()
    for i in range(0, len(samples), per_byte):
        byte = 0
        group = samples[i:i + per_byte]
        for j, s in enumerate(group):
            byte |= s << (8 - bit_depth * (j + 1))
        row.append(byte)
    return bytes(row)


def png(width, height, bit_depth, color_type, rows, extra=(), interlace=False):
    """rows: height lists of width*channels samples. Filter type 0 (None) except row 1 uses Sub."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    bpp = max(1, channels * bit_depth // 8)

    def encode(sub_rows):
        raw = bytearray()
        for y, samples in enumerate(sub_rows):
            packed = pack_row(samples, bit_depth)
            if y % 2 == 1:  # Sub filter on odd rows exercises the unfilter path
                filtered = bytes((packed[i] - (packed[i - bpp] if i >= bpp else 0)) & 0xFF
                                 for i in range(len(packed)))
                raw += b"\x01" + filtered
            else:
                raw += b"\x00" + packed
        return bytes(raw)

    if not interlace:
        raw = encode(rows)
    else:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b""
        for x0, y0, dx, dy in passes:
            sub = []
            for y in range(y0, height, dy):
                xs = list(range(x0, width, dx))
                if not xs:
                    continue
                sub.append([rows[y][x * channels + c] for x in xs for c in range(channels)])
            if sub and sub[0]:
                raw += encode(sub)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for kind, payload in extra:
        data += chunk(kind, payload)
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    return data


def png_fixtures():
    def write(name, data):
        with open(out(name), "wb") as f:
            f.write(data)

    # 16-bit gray, 3x2: values chosen so that scaling (round(v*255/65535)) and
    # truncation (v >> 8) disagree on 511 and 65280.
    write("gray16_3x2.png", png(3, 2, 16, 0, [[0, 511, 65535], [65280, 32896, 257]]))
    # 16-bit RGB, 2x1.
    write("rgb16_2x1.png", png(2, 1, 16, 2, [[65535, 0, 511, 32896, 65280, 257]]))
    # 8-bit palette with tRNS-free palette, 3x2 -> RGB.
    plte = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
    write("palette_3x2.png", png(3, 2, 8, 3, [[0, 1, 2], [3, 2, 1]], extra=[(b"PLTE", plte)]))
    # 4-bit palette with tRNS (palette alpha) -> RGB, alpha dropped.
    write("palette4_trns_3x1.png", png(3, 1, 4, 3, [[2, 0, 3]],
                                       extra=[(b"PLTE", plte), (b"tRNS", bytes([0, 128, 255, 7]))]))
    # 16-bit RGBA, 2x1 -> RGB scaled to 8 bits, alpha (0 and partial) dropped.
    write("rgba16_2x1.png", png(2, 1, 16, 6, [[511, 65280, 32896, 0, 257, 65535, 1000, 30000]]))
    # 8-bit gray + alpha, 2x2 -> gray, alpha dropped (not composited).
    write("gray_alpha_2x2.png", png(2, 2, 8, 4, [[10, 0, 200, 255], [77, 128, 255, 1]]))
    # 8-bit RGBA, 2x1 -> RGB, alpha dropped.
    write("rgba_2x1.png", png(2, 1, 8, 6, [[10, 20, 30, 0, 40, 50, 60, 128]]))
    # 1-bit gray, 10x1 -> 0 / 255.
    write("gray1_10x1.png", png(10, 1, 1, 0, [[1, 0, 1, 1, 0, 0, 0, 1, 0, 1]]))
    # 8-bit gray with gAMA 1.0: the reader ignores colour-space chunks (as PIL/torchvision do).
    write("gray_gamma1_2x1.png", png(2, 1, 8, 0, [[64, 200]], extra=[(b"gAMA", struct.pack(">I", 100000))]))
    # Adam7-interlaced 8-bit RGB, 5x5.
    rows = [[(x * 40 + c * 7 + y * 3) % 256 for x in range(5) for c in range(3)] for y in range(5)]
    write("rgb_adam7_5x5.png", png(5, 5, 8, 2, rows, interlace=True))


# ---------------------------------------------------------------- idx

def idx_fixtures(mnist):
    n = 8
    for name, header_len, item in (("t10k-images-idx3-ubyte", 16, 28 * 28), ("t10k-labels-idx1-ubyte", 8, 1)):
        with gzip.open(os.path.join(mnist, name + ".gz"), "rb") as f:
            data = f.read()
        header = bytearray(data[:header_len])
        header[4:8] = struct.pack(">I", n)
        head = bytes(header) + data[header_len:header_len + n * item]
        with open(out(name.replace("t10k", "t10k-head8") + ".gz"), "wb") as f:
            f.write(gzip.compress(head, mtime=0))


# ---------------------------------------------------------------- npz

def npz_fixtures():
    # numpy.savez's own archive (uncompressed members a.npy, b.npy).
    import numpy as np
    np.savez(out("numpy-savez.npz"), a=np.arange(6, dtype="<f4").reshape(2, 3), b=np.array([3, -1], dtype="<i8"))


if __name__ == "__main__":
    npy_fixtures()
    npz_fixtures()
    png_fixtures()
    if len(sys.argv) > 1:
        idx_fixtures(sys.argv[1])
