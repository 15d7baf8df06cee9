"""The combined modalities table (issue #13), experiments/results/modalities.md, from the JSON
each component's script writes under experiments/results/modalities/ (video, audio, coattn,
vq): every model's metric beside its baseline, and whether it beats it.

    python experiments/modalities.py                      # assemble the table from the JSONs
    python experiments/modalities.py --run video,audio    # first (re)run those components

Each component script is `experiments/modalities/<name>.py` with `main(argv) -> dict`; its JSON
holds {"component", "command", "wall_s", "rows": [{"model", "metric", "value", "baseline",
"baseline_value", "beats_baseline"}], ...} and its own markdown holds the details.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mmjax import reporting  # noqa: E402  pylint: disable=wrong-import-position

RESULTS = os.path.join(REPO, "experiments", "results")
COMPONENTS = ("video", "audio", "coattn", "vq")


def load(results_dir: str) -> list[dict]:
  """The components' JSONs found under RESULTS/modalities/, in COMPONENTS order."""
  found = []
  for name in COMPONENTS:
    path = os.path.join(results_dir, "modalities", f"{name}.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        found.append(json.load(f))
  return found


def _fmt(value) -> str:
  return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def report(components: list[dict]) -> str:
  """One table over every component's rows, then each component's regenerate command."""
  lines = ["# Beyond still images: each model's metric beside its baseline", "",
           "| component | model | metric | value | baseline | baseline value | beats |",
           "|---|---|---|---|---|---|---|"]
  for c in components:
    for r in c["rows"]:
      lines.append(f"| {c['component']} | {r['model']} | {r['metric']} | {_fmt(r['value'])} | "
                   f"{r['baseline']} | {_fmt(r['baseline_value'])} | "
                   f"{'yes' if r['beats_baseline'] else 'no'} |")
  lines += ["", "Details and regenerate commands (wall time of the recorded run):", ""]
  for c in components:
    lines.append(f"- {c['component']}: `{c['command']}` ({c['wall_s'] / 60:.1f} min), "
                 f"[details](modalities/{c['component']}.md)")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run", default="", help=f"components to run first, from {COMPONENTS}")
  parser.add_argument("--output", default=RESULTS)
  args = parser.parse_args(argv)
  for name in filter(None, args.run.split(",")):
    if name not in COMPONENTS:
      parser.error(f"unknown component {name!r}; choose from {COMPONENTS}")
    importlib.import_module(f"experiments.modalities.{name}").main(
        ["--output", os.path.join(args.output, "modalities")])
  components = load(args.output)
  if not components:
    parser.error(f"no component results under {os.path.join(args.output, 'modalities')}")
  text = report(components)
  reporting.write_text(os.path.join(args.output, "modalities.md"), text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
