"""experiments/shape_diagnosis.py: its data statistics on hand-made records, and its report."""

import os
import sys

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "experiments")
sys.path.insert(0, EXPERIMENTS)

import shape_diagnosis as sd  # noqa: E402  pylint: disable=wrong-import-position,import-error


def _record(objects, captions):
  return {"scene": {"background": "white", "objects": [
      {"shape": s, "colour": c, "size": "small", "shading": "matte", "x": 0.5, "y": 0.5}
      for s, c in objects]}, "captions": captions}


def test_caption_statistics_count_captions_naming_every_or_no_shape():
  records = [
      _record([("circle", "red"), ("star", "blue")],
              ["A picture of a small red circle, a small blue star.",  # every shape
               "A red circle on a white background.",  # one of two
               "There are two shapes in this image."]),  # none
      _record([("circle", "red"), ("circle", "blue")],
              ["A picture of a small red circle.",  # one circle of two: not every object
               "A picture of a red circle, a blue circle."]),  # every object
  ]
  stats = sd.caption_statistics(records)
  assert stats == {"names_every_shape": 2 / 5, "names_no_shape": 1 / 5, "captions": 5}


def test_negative_statistics_find_colour_twins():
  # Two scenes share the colour set {red}; one of them also its colour-shape pairs.
  records = [_record([("circle", "red")], []), _record([("square", "red")], []),
             _record([("circle", "blue")], []), _record([("circle", "red")], [])]
  stats = sd.negative_statistics(records, batch_size=4, batches=1)
  # 12 ordered pairs; same colour set: the three red scenes among themselves (6 pairs); same
  # pairs: scenes 0 and 3 (2 pairs).
  assert stats["same_colour_set"] == 6 / 12 and stats["same_colour_shape_pairs"] == 2 / 12


def test_report_lists_supervised_rows_by_step():
  saved = {"command": "python experiments/shape_diagnosis.py", "wall_min": 1.0, "rows": [
      {"run": "sup_cnn_max", "seed": 0, "train_s": 60.0, "supervised_shape@150": 0.81,
       "supervised_shape@300": 0.99}]}
  text = sd.report(saved)
  assert "| the same CNN, global max pooling | 1.0 | 0.81 | 0.99 |" in text
  assert "## Runs" not in text  # no CLIP rows, no empty table
