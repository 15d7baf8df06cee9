"""Weight import and export: open_clip (CLIP, SigLIP, CoCa) and Hugging Face BERT <-> mmjax.

Modules: `common` (strict key check, flat/scanned params, state-dict files), `torch_layers`
(rules for torch building blocks), `open_clip` + `open_clip_config`, `hf_bert`; the CLI is
`python -m mmjax.convert`.
"""
