"""Model families; importing this package registers each of them by name."""

from mmjax.models import audio_lm  # noqa: F401  registers 'audio_lm'
from mmjax.models import clap  # noqa: F401  registers 'clap'
from mmjax.models import coca  # noqa: F401  registers 'coca'
from mmjax.models import flamingo  # noqa: F401  registers 'flamingo'
from mmjax.models import lm  # noqa: F401  registers 'lm'
from mmjax.models import qformer_family  # noqa: F401  registers 'qformer'
from mmjax.models import two_tower  # noqa: F401  registers 'clip', 'siglip'
from mmjax.models import vqvae  # noqa: F401  registers 'vq'
from mmjax.models import vq_lm  # noqa: F401  registers 'vq_lm'
from mmjax.models import vilbert  # noqa: F401  registers 'vilbert'
from mmjax.models import lxmert  # noqa: F401  registers 'lxmert'
from mmjax.models import visualbert  # noqa: F401  registers 'visualbert'
from mmjax.models.family import ModelFamily, build, get, register, registered  # noqa: F401
