"""minidni: an autograd-free engine for Decoupled Neural Interfaces using Synthetic Gradients.

Packages: ``backend`` (NumPy/CuPy switch), ``functional`` (forward/backward pairs),
``layers`` (objects owning parameters), ``optim``, ``gradcheck``, ``dni`` (synthetic
gradients), ``data`` and ``tasks`` (datasets), ``experiments`` (the command line).
"""

__version__ = "0.1.0"
