"""Weight import and export: open_clip, Hugging Face (BERT, GPT-2 / Llama LMs), llama.cpp GGUF and
open_flamingo <-> mmjax.

Modules: `common` (strict key check, flat/scanned params, state-dict files), `torch_layers`
(rules for torch building blocks), `open_clip` + `open_clip_config`, `hf_bert`, `hf_lm` (causal
LMs, config.json both ways, save/load_pretrained), `gguf` (read-only: dequantised weights,
metadata, tokenizer), `open_flamingo` (resampler, gated xattn, Flamingo checkpoints); the CLI is
`python -m mmjax.convert`.
"""
