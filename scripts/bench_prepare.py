"""Images/s of converting a user-supplied copy to array_record (`datasets.prepare`).

Writes N synthetic 640x480 JPEGs (COCO's typical size; noisy gradients, so PNG compression is
not flattered) with a Karpathy `dataset_coco.json` into a temporary manual_dir, then times
preparing `coco_captions` at --image_size. Threads: $MMJAX_PREPARE_THREADS (default CPU count).

    python scripts/bench_prepare.py --num 500 --image_size 64
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image

from mmjax.data import datasets


def write_copy(root: str, num: int) -> None:
  """N JPEGs under root/coco/train2014 and their Karpathy JSON (all in 'train')."""
  folder = os.path.join(root, "coco", "train2014")
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  ramp = np.linspace(0, 190, 640)[None, :, None]
  entries = []
  for i in range(num):
    name = f"COCO_train2014_{i:012d}.jpg"
    pixels = (rng.random((480, 640, 3)) * 64 + ramp).astype(np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, name), quality=90)
    entries.append({"filepath": "train2014", "filename": name, "split": "train", "cocoid": i,
                    "sentences": [{"raw": f"image {i} sentence {j}"} for j in range(5)]})
  with open(os.path.join(root, "coco", "dataset_coco.json"), "w") as f:
    json.dump({"images": entries, "dataset": "coco"}, f)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num", type=int, default=500, help="images to convert")
  parser.add_argument("--image_size", type=int, default=64, help="stored shorter side")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    write_copy(os.path.join(tmp, "manual"), args.num)
    start = time.perf_counter()
    datasets.prepare("coco_captions", data_dir=os.path.join(tmp, "data"),
                     manual_dir=os.path.join(tmp, "manual"), image_size=args.image_size)
    seconds = time.perf_counter() - start
  print(f"coco_captions prepare: {args.num} JPEGs 640x480 -> {args.image_size}px in "
        f"{seconds:.1f}s = {args.num / seconds:.0f} images/s")


if __name__ == "__main__":
  main()
