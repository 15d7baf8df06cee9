"""Every parameter of every family names one logical axis per dimension. A mismatch (e.g. a
scalar annotated with one axis) passes the unsharded unit tests and only fails when the trainer
builds its NamedShardings, so each family's micro preset is checked here, shapes only.
(Unannotated parameters are replicated by the trainer: the VQ-VAE of `vq` / `vq_lm` has none.)"""

import glob
import os

import flax.linen as nn
import pytest

from mmjax import config_lib, summary
from mmjax.models import family as family_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# configs/*.py with a `micro` preset of a whole model (not the shared helpers).
SPECS = sorted(f"configs/{os.path.basename(p)}:micro" for p in glob.glob(f"{ROOT}/configs/*.py")
               if os.path.basename(p) not in ("common.py", "vl_common.py", "bert_text.py"))


@pytest.mark.parametrize("spec", SPECS)
def test_every_parameter_names_one_axis_per_dimension(spec):
  family = family_lib.build(config_lib.load_config(os.path.join(ROOT, spec)).model)
  leaves = summary.flat_params(summary.abstract_variables(family)["params"])
  assert leaves
  annotated = {n: leaf for n, leaf in leaves.items() if isinstance(leaf, nn.LogicallyPartitioned)}
  assert annotated or spec == "configs/vq.py:micro"
  bad = {name: (leaf.names, leaf.value.shape) for name, leaf in annotated.items()
         if len(leaf.names) != leaf.value.ndim}
  assert not bad, f"{spec}: parameters whose logical axes do not match their rank: {bad}"
