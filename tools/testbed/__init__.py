"""Real registries, object storage and a recording storage proxy on loopback, for tests and demos.

A registry can also run as a pull-through mirror of another (RegistryProxy, open_mirror).

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
from tools.testbed.motoserver import MotoServer
from tools.testbed.oci_layout import skopeo_binary, write_oci_index
from tools.testbed.process import TestbedError, TestbedUnavailable, free_port
from tools.testbed.proxy import RecordedRequest, StorageProxy, s3_error_xml
from tools.testbed.push import push_blob, push_blob_file
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
    put_blob_in_storage,
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
    "TESTBED_USER_AGENT",
    "BearerAuth",
    "BlobFactory",
    "BlobFileFactory",
    "Deployment",
    "Mirror",
    "MirrorFactory",
    "MotoServer",
    "PushedBlob",
    "PushedFile",
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
    "fetch_token",
    "flip_byte",
    "free_port",
    "layer_link_path",
    "make_tls_cert",
    "mirror_proxy_config",
    "open_filesystem_registry",
    "open_mirror",
    "open_s3_registry",
    "open_token_registry",
    "parse_scope",
    "push_blob",
    "push_blob_file",
    "put_blob_in_storage",
    "registry_binary",
    "s3_error_xml",
    "skopeo_binary",
    "write_htpasswd",
    "write_oci_index",
]
