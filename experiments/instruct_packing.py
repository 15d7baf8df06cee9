"""What packing buys instruct_tiny: conversations per row, real (non-pad) token fraction and
trained (assistant) tokens per row on shapes_instruct's validation split, with and without
packing (`data.pack_conversations`), plain and chain-of-thought.

    python experiments/instruct_packing.py [--pack 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from mmjax import config_lib
from mmjax.data import pipeline, tokenizers


def stats(pack: int, cot: bool) -> dict[str, float]:
  """Row statistics of configs/flamingo.py:instruct_tiny's data with these two fields."""
  c = config_lib.load_config("configs/flamingo.py:instruct_tiny").data
  c.pack_conversations, c.chain_of_thought, c.split = pack, cot, "validation"
  tok = tokenizers.get_tokenizer(c.tokenizer, data_dir=c.data_dir)
  it = pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1, train=False)
  convs, real, trained = [], [], []
  try:
    for b in it:
      convs += list((b["tokens"] == tok.bos_id).sum(1))
      real += list((b["tokens"] != tok.pad_id).mean(1))
      trained += list(b["loss_mask"].sum(1))
  finally:
    it.close()
  return dict(rows=len(convs), conversations=float(np.mean(convs)), real=float(np.mean(real)),
              trained=float(np.mean(trained)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pack", type=int, default=3, help="data.pack_conversations to compare")
  args = parser.parse_args()
  for pack in (1, args.pack):
    for cot in (False, True):
      s = stats(pack, cot)
      print(f"pack_conversations={pack} chain_of_thought={cot}: {s['rows']} rows, "
            f"{s['conversations']:.2f} conversations/row, {s['real']:.1%} real tokens, "
            f"{s['trained']:.1f} trained tokens/row")


if __name__ == "__main__":
  main()
