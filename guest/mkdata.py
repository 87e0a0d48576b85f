#!/usr/bin/env python3
"""Stages the workloads' data files: DIR/files/fNNNNNN, N files of 1 MiB each.

Block b (4 KiB) of file i: b"KUMO", le32 i, le32 b, then bytes (i + b + j) & 0xff for
j = 12..4095 (guest/workloads/wl.h checks it). Deterministic, so the image is too.
usage: mkdata.py DIR N
"""
import os
import struct
import sys


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    files = os.path.join(out, "files")
    os.makedirs(files, exist_ok=True)
    ramp = bytes(range(256)) * 18
    for i in range(n):
        blocks = []
        for b in range(256):
            s = (i + b + 12) & 0xFF
            blocks.append(b"KUMO" + struct.pack("<II", i, b) + ramp[s:s + 4084])
        with open(os.path.join(files, "f%06d" % i), "wb") as f:
            f.write(b"".join(blocks))
    with open(os.path.join(out, "README"), "w") as f:
        f.write("kumo workload data: %d files of 1 MiB in files/ (guest/mkdata.py)\n" % n)


if __name__ == "__main__":
    main()
