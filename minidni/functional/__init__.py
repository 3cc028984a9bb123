"""Pure forward/backward pairs: ``y, cache = op_forward(...)``, ``grads = op_backward(dy, cache)``.

Each op takes its array module from its inputs (``xp = get_xp(...)``), keeps the
input dtype (float32 in, float32 out), and never syncs with the host. This
module's names are a public contract; see each submodule for shapes.
"""

from minidni.functional.activations import *  # noqa: F401,F403
from minidni.functional.batchnorm import *  # noqa: F401,F403
from minidni.functional.conv import *  # noqa: F401,F403
from minidni.functional.linear import *  # noqa: F401,F403
from minidni.functional.losses import *  # noqa: F401,F403
from minidni.functional.lstm import *  # noqa: F401,F403
from minidni.functional.pool import *  # noqa: F401,F403
