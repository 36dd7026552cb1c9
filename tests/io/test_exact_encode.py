"""Exact (dataset) encodes give the same bytes for the same frames, whatever the heap holds.

DVC hashes the dataset's videos, so an unchanged clip must encode to unchanged bytes. x264's
macroblock tree reads memory it never wrote: with it on, a long test process once encoded one
clip to two byte strings. glibc's MALLOC_PERTURB_ fills every fresh allocation with a chosen
byte, so child processes under different fillings stand in for different heap leftovers (the
machines this runs on use glibc; elsewhere the variable is ignored and the test proves less).
"""

import os
import subprocess
import sys

ENCODE_IN_A_CHILD = """
import hashlib
import numpy as np
from interactavatar.io.media import encode_video

digest = hashlib.sha256()
for height, width in [(88, 88), (96, 160), (240, 416)]:
    rng = np.random.default_rng(height)
    y, x = np.mgrid[0:height, 0:width]
    frames = np.stack([np.sin((x + 3 * t) / 7) + np.cos((y - 2 * t) / 5) for t in range(8)]) * 60 + 128
    frames = (frames[..., None] + rng.normal(0, 8, (8, height, width, 3))).clip(0, 255).astype(np.uint8)
    digest.update(encode_video(frames, 25, exact=True))
print(digest.hexdigest())
"""


def test_the_same_frames_encode_to_the_same_bytes_under_any_heap_filling():
    digests = set()
    for filling in (0, 1, 85, 170):
        env = os.environ | {"MALLOC_PERTURB_": str(filling)}
        child = subprocess.run([sys.executable, "-c", ENCODE_IN_A_CHILD], env=env, capture_output=True, text=True)
        assert child.returncode == 0, child.stderr
        digests.add(child.stdout.strip())
    assert len(digests) == 1, f"{len(digests)} different encodes of the same frames"
