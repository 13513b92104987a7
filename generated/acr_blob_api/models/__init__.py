"""Contains all the data models used in inputs/outputs"""

from .acr_access_token import AcrAccessToken
from .acr_access_token_request import AcrAccessTokenRequest
from .acr_api_version import AcrApiVersion
from .acr_error_info import AcrErrorInfo
from .acr_errors import AcrErrors
from .acr_refresh_token import AcrRefreshToken
from .acr_refresh_token_request import AcrRefreshTokenRequest
from .annotations import Annotations
from .artifact_manifest import ArtifactManifest
from .descriptor import Descriptor
from .image_index import ImageIndex
from .image_manifest import ImageManifest
from .platform import Platform
from .tag_list import TagList

__all__ = (
    "AcrAccessToken",
    "AcrAccessTokenRequest",
    "AcrApiVersion",
    "AcrErrorInfo",
    "AcrErrors",
    "AcrRefreshToken",
    "AcrRefreshTokenRequest",
    "Annotations",
    "ArtifactManifest",
    "Descriptor",
    "ImageIndex",
    "ImageManifest",
    "Platform",
    "TagList",
)
