"""mmjax: multimodal models in JAX/Flax (Flamingo, CLIP, SigLIP, CoCa) from one CPU to pods."""

from setuptools import find_packages, setup

# Minimum versions are the ones the test suite runs against (see README "Tested versions").
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "tensorflow-datasets>=4.9.10",
    "ml-collections>=1.1.0",
    "numpy>=2.0",
    "pillow>=11.0",
    "sentencepiece>=0.2.0",
    "tokenizers>=0.21",  # BPE / WordPiece implementations (GPT-2, CLIP, BERT tokenizers)
    "ftfy>=6.1",  # CLIP's text cleaning, as open_clip applies it
    "tensorboardX>=2.6",
    "safetensors>=0.5",
    "absl-py>=2.1",
    "pycocoevalcap>=1.2",  # the official CIDEr / BLEU scorers for captioning evaluation
    "scipy>=1.11",  # SSIM's Gaussian filter
    "matplotlib>=3.8",  # the plots of experiments/ (accuracy vs batch size / compute)
]

EXTRAS_REQUIRE = {
    # Reference implementations for parity tests. open-flamingo itself is installed with
    # `pip install --no-deps open-flamingo==2.0.1` (README's test command): its declared
    # dependencies pin old torch/transformers releases. torch 2.14.1 / torchvision 0.29.1 are the pair
    # that import together here (see DESIGN.md); open_clip 3.3.0 is the version our counts match.
    "test": [
        "pytest>=8.0",
        "pytest-xdist>=3.5",  # `-n 2`: the suite on both cores (compiles are single-threaded)
        "torch==2.14.1",
        "torchvision==0.29.1",
        "open_clip_torch==3.3.0",
        "timm>=1.0",
        "transformers>=4.50",
        "gguf>=0.19.0",  # reads llama.cpp checkpoints (the SmolLM2 parity test)
        "accelerate>=1.15.0",  # transformers' gguf_file loading needs it
        "einops>=0.8",  # open_flamingo's helpers.py (installed with --no-deps, see README)
        "einops-exts>=0.0.4",
        # The official tooling that writes/reads the format fixtures of tests/data/test_formats.py
        # (the library reads COCO JSON and webdataset shards with json / tarfile).
        "pycocotools>=2.0.7",
        "webdataset>=1.0",
    ],
}

setup(
    name="mmjax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["mmjax", "mmjax.*"]),
    package_data={"mmjax": ["data/assets/*"]},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
