"""Real registries, object storage and a recording storage proxy on loopback, for tests and demos.

A registry can also run as a pull-through mirror of another (RegistryProxy, open_mirror).
Whole images and artifacts go in with push_image, push_artifact and push_manifest.

Everything binds to 127.0.0.1 (the storage proxy to 127.0.0.2, a second loopback address, so
that a redirect crosses hosts), on free ports, in temporary folders, and is stopped by the code
that started it.

An Azure Container Registry: `open_acr_deployment()` (tools/testbed/acr.py) starts ACR's front
on https://127.0.0.1:PORT (challenges, `/oauth2/exchange` and `/oauth2/token` answered as live
ACR answers, 307s to SAS URLs), a token server behind it, and Azurite (Microsoft's storage
emulator, tools/testbed/azurite.py) behind a blob endpoint on https://127.0.0.2:PORT that
answers in Azure Storage's own form (tools/testbed/blob_endpoint.py); FakeAADCredential
(tools/testbed/aad.py) is the Azure AD credential it accepts. Install Azurite with
tools/testbed/install-azurite.sh (part of `make test`).
"""

from tools.testbed.aad import AccessToken, AsyncFakeAADCredential, FakeAADCredential, TokenCall
from tools.testbed.acr import (
    ACR_AAD_SCOPE,
    ACR_API_VERSION,
    DEFAULT_USER,
    MANAGEMENT_AAD_SCOPE,
    SAS_LIFETIME,
    AcrDeployment,
    AcrRegistry,
    AcrRequest,
    AcrStorage,
    blob_name,
    open_acr_deployment,
)
from tools.testbed.azurite import DEV_ACCOUNT, DEV_ACCOUNT_KEY, AzuriteServer, azurite_binary
from tools.testbed.blob_endpoint import BlobEndpoint, azure_error_xml
from tools.testbed.deployments import (
    BlobFactory,
    BlobFileFactory,
    Deployment,
    Mirror,
    MirrorFactory,
    PushedBlob,
    PushedFile,
    PushTarget,
    mirror_proxy_config,
    open_filesystem_registry,
    open_mirror,
    open_s3_registry,
    open_token_registry,
)
from tools.testbed.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_SIZE,
    OCI_EMPTY,
    OCI_LAYER_GZIP,
    TITLE,
    PlatformImage,
    PushedArtifact,
    PushedContent,
    PushedImage,
    dump_json,
    layer_tar,
    push_artifact,
    push_image,
    push_manifest,
)
from tools.testbed.motoserver import MotoServer
from tools.testbed.oci_layout import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    skopeo_binary,
    write_oci_index,
)
from tools.testbed.process import TestbedError, TestbedUnavailable, free_port
from tools.testbed.proxy import RecordedRequest, StorageProxy, s3_error_xml
from tools.testbed.push import push_blob, push_blob_file, put_manifest
from tools.testbed.registry import (
    RegistryProxy,
    RegistryServer,
    TokenAuth,
    registry_binary,
    write_htpasswd,
)
from tools.testbed.storage import (
    blob_data_path,
    flip_byte,
    layer_link_path,
    manifest_revision_path,
    put_blob_in_storage,
    put_manifest_in_storage,
)
from tools.testbed.tls import client_ssl_context, make_tls_cert, server_ssl_context
from tools.testbed.token_server import (
    TESTBED_USER_AGENT,
    BearerAuth,
    TokenRequest,
    TokenServer,
    decode_jwt_claims,
    decode_jwt_header,
    fetch_token,
    parse_scope,
)

__all__ = [
    "ACR_AAD_SCOPE",
    "ACR_API_VERSION",
    "DEFAULT_USER",
    "DEV_ACCOUNT",
    "DEV_ACCOUNT_KEY",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANAGEMENT_AAD_SCOPE",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "SAS_LIFETIME",
    "TESTBED_USER_AGENT",
    "TITLE",
    "AccessToken",
    "AcrDeployment",
    "AcrRegistry",
    "AcrRequest",
    "AcrStorage",
    "AsyncFakeAADCredential",
    "AzuriteServer",
    "BearerAuth",
    "BlobEndpoint",
    "BlobFactory",
    "BlobFileFactory",
    "Deployment",
    "FakeAADCredential",
    "Mirror",
    "MirrorFactory",
    "MotoServer",
    "PlatformImage",
    "PushTarget",
    "PushedArtifact",
    "PushedBlob",
    "PushedContent",
    "PushedFile",
    "PushedImage",
    "RecordedRequest",
    "RegistryProxy",
    "RegistryServer",
    "StorageProxy",
    "TestbedError",
    "TestbedUnavailable",
    "TokenAuth",
    "TokenCall",
    "TokenRequest",
    "TokenServer",
    "azure_error_xml",
    "azurite_binary",
    "blob_data_path",
    "blob_name",
    "client_ssl_context",
    "decode_jwt_claims",
    "decode_jwt_header",
    "dump_json",
    "fetch_token",
    "flip_byte",
    "free_port",
    "layer_link_path",
    "layer_tar",
    "make_tls_cert",
    "manifest_revision_path",
    "mirror_proxy_config",
    "open_acr_deployment",
    "open_filesystem_registry",
    "open_mirror",
    "open_s3_registry",
    "open_token_registry",
    "parse_scope",
    "push_artifact",
    "push_blob",
    "push_blob_file",
    "push_image",
    "push_manifest",
    "put_blob_in_storage",
    "put_manifest",
    "put_manifest_in_storage",
    "registry_binary",
    "s3_error_xml",
    "server_ssl_context",
    "skopeo_binary",
    "write_htpasswd",
    "write_oci_index",
]
