"""Model families; importing this package registers every family with `family.build`."""

from mmjax.models import flamingo  # noqa: F401  (registers 'flamingo')
from mmjax.models import lm  # noqa: F401  (registers 'lm')
