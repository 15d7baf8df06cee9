"""Data for mmjax: procedural and offline real datasets (tfds, array_record), tokenizers and
grain pipelines.

  shapes_world.py   scene sampling, rendering, captions, VQA, motion (pure, seeded)
  builders/         tfds builders: shapes, shapes_interleaved, shapes_video; from installed
                    packages (offline.py): emoji, tuxpaint, fashion_mnist, text
  datasets.py       data_dir, registry, prepare-on-first-use, random-access sources
  tokenizers.py     shapes_sp, text_sp, gpt2, clip, bert_wordpiece; <image>/<|endofchunk|> handling
  preprocess.py     PNG decode, open_clip-matching resize/crop/normalise, augmentation
  packing.py        segments -> tokens / loss_mask / media_locations
  tasks.py          one stored record -> one batch row, per task
  pipeline.py       make_pipeline: grain dataset + checkpointable batch iterator
  config.py         default_data_config: every field documented
  bench.py          examples/s of the training pipeline
"""
