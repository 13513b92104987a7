"""Real registries, object storage and a recording storage proxy on loopback, for tests and demos.

A registry can also run as a pull-through mirror of another (RegistryProxy, open_mirror).
Whole images and artifacts go in with push_image, push_artifact and push_manifest.

Everything binds to 127.0.0.1 (the storage proxy to 127.0.0.2, a second loopback address, so
that a redirect crosses hosts), on free ports, in temporary folders, and is stopped by the code
that started it.
"""

from tools.testbed.deployments import (
    BlobFactory,
    BlobFileFactory,
    Deployment,
    Mirror,
    MirrorFactory,
    PushedBlob,
    PushedFile,
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
from tools.testbed.tls import client_ssl_context, make_tls_cert
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
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_MEDIA_TYPES",
    "MAX_MANIFEST_SIZE",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "TESTBED_USER_AGENT",
    "TITLE",
    "BearerAuth",
    "BlobFactory",
    "BlobFileFactory",
    "Deployment",
    "Mirror",
    "MirrorFactory",
    "MotoServer",
    "PlatformImage",
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
    "TokenRequest",
    "TokenServer",
    "blob_data_path",
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
    "skopeo_binary",
    "write_htpasswd",
    "write_oci_index",
]
