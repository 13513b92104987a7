"""The version of acr-blob, in a module of its own so that reading it (``acr-blob --version``)
loads nothing else."""

__version__ = "0.1.0"
"""The installed version of acr-blob, also sent in the ``User-Agent`` header.

Example::

    >>> import acr_blob
    >>> acr_blob.__version__.count(".")
    2
"""
