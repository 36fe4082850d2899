"""imresize speed: ours vs BasicSR's imresize vs PIL, on a 2040x1356 image (DIV2K size), x1/4 and x0.75.

    python bench/resize.py [--basicsr /path/to/basicsr-1.4.2]   # the unpacked sdist, for the reference ratio
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import best_of  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from pipeline.resize import imresize  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--basicsr", help="unpacked basicsr-1.4.2 sdist folder")
    args = ap.parse_args()
    img_u8 = np.asarray(Image.fromarray(skimage.data.retina()).resize((2040, 1356), Image.BICUBIC))
    img = img_u8.astype(np.float32) / 255.0
    reference = None
    if args.basicsr:
        from make_fixtures import load_basicsr

        reference = load_basicsr(Path(args.basicsr))[0].imresize
    print("image 2040x1356, each after one untimed call (ours caches its band matrices), best of 7 (BasicSR: 3)")
    for scale in (0.25, 0.75):
        imresize(img, scale)
        ours = best_of(lambda: imresize(img, scale), repeats=15)
        size = (int(np.ceil(2040 * scale)), int(np.ceil(1356 * scale)))
        pil = best_of(lambda: Image.fromarray(img_u8).resize(size, Image.BICUBIC), repeats=7)
        line = f"x{scale}: ours {ours * 1e3:.0f} ms | PIL {pil * 1e3:.0f} ms (ours/PIL {ours / pil:.2f})"
        if reference:
            reference(img, scale)
            ref = best_of(lambda: reference(img, scale))
            line += f" | BasicSR {ref * 1e3:.0f} ms (BasicSR/ours speed-up {ref / ours:.1f}x, target >= 5x)"
        else:
            line += " | BasicSR: pass --basicsr to measure"
        print(line)


if __name__ == "__main__":
    main()
