"""Contains all the data models used in inputs/outputs"""

from .acr_error_info import AcrErrorInfo
from .acr_errors import AcrErrors

__all__ = (
    "AcrErrorInfo",
    "AcrErrors",
)
