"""The runner for azure-containerregistry (PyPI): `PYTHON azure_containerregistry.py < request`.

One `ContainerRegistryClient` per run; each download is `download_blob(repository, digest)`,
a stream of 4 MiB Range requests whose chunks are written to the file as they come, the way
the package's samples save a blob. Options set, and why:
- the credential: with the request's `aad_token` (the ACR deployment), an azure-core
  TokenCredential that hands it out (`FakeAADCredential`, the shape of azure-identity's), and
  `audience` the registry's AAD audience; the client exchanges it at the registry's
  `/oauth2/exchange` for an ACR refresh token, then gets access tokens at `/oauth2/token`;
- `enforce_https=False` on each call for an http registry: the package's challenge policy
  refuses non-https URLs otherwise (it is read from the call's options, not the constructor's);
- `connection_verify=CA` for an https registry with a private CA (azure-core's option).

It has no pull and no platform choice. For an image pull the runner composes one:
`get_manifest(repository, tag)` (the index; checked against its Docker-Content-Digest), the
runner's pick of the index's entry for the platform, `get_manifest(repository, digest)`, then
`download_blob` of the config and each layer into `pull-<i>/<hex>`. `get_manifest` hands the
manifest back parsed (`GetManifestResult.manifest`, a dict), never its bytes: the runner
writes `json.dumps` of it as `manifest.json`, last. It has nothing that writes layers as files
named by their titles, and no parallel ranges: such requests are reported `unsupported`.

Credentials: the client takes only an azure-core `TokenCredential` or none. It has no way to
send a user name and password, neither as Basic auth nor at a token realm: a request with
credentials and no `aad_token` is reported `unsupported` (the orchestrator runs this client
on the ACR deployment, whose requests carry an AAD token). Anonymously, a Bearer challenge
sends it to the registry's own `/oauth2/token` (ACR's endpoint, not the challenge's realm),
and a Basic challenge is not understood at all.
See _protocol.py for the protocol.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.compare.runners import _protocol
else:
    try:
        import _protocol  # run as a script: this folder is first on sys.path
    except ImportError:
        from tools.compare.runners import _protocol

NO_BASIC = (
    "no user name/password auth: the client takes only an AAD TokenCredential "
    "(exchanged for an ACR token at /oauth2/exchange) or none"
)
# The AAD audience of ACR's data plane: the credential is asked for `AUDIENCE/.default`.
AUDIENCE = "https://containerregistry.azure.net"
AAD_TOKEN_LIFETIME = 3600


class FakeAADCredential:
    """An azure-core TokenCredential handing out one AAD token, as azure-identity's would."""

    def __init__(self, token: str) -> None:
        self._token = token
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
            AccessToken,
        )

        self.scopes.extend(scopes)
        return AccessToken(self._token, int(time.time()) + AAD_TOKEN_LIFETIME)

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeAADCredential:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


NO_FILES = (
    "no pull: get_manifest and download_blob only, nothing that writes layers as files named "
    "by their titles"
)


def prepare(
    request: _protocol.Request, closer: _protocol.Closer
) -> _protocol.Download | _protocol.Unsupported:
    if request.credentials is not None and request.aad_token is None:
        return _protocol.Unsupported(NO_BASIC)
    if request.pull == "files":
        return _protocol.Unsupported(NO_FILES)
    parallel = _protocol.no_parallel(
        request, "download_blob fetches 4 MiB ranges one after another, no option for more"
    )
    if parallel is not None:
        return parallel
    from azure.containerregistry import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        ContainerRegistryClient,
    )

    options: dict[str, Any] = {"audience": AUDIENCE}
    if request.https and request.ca_cert:
        options["connection_verify"] = request.ca_cert
    credential = FakeAADCredential(request.aad_token) if request.aad_token else None
    client = ContainerRegistryClient(request.registry, credential, **options)
    closer.enter_context(client)
    call_options: dict[str, Any] = {} if request.https else {"enforce_https": False}

    def save(digest: str, path: Path) -> None:
        # The file is opened once the first answer is in, as in the package's samples.
        with (
            client.download_blob(request.repository, digest, **call_options) as stream,
            path.open("wb") as file,
        ):
            for chunk in stream:
                file.write(chunk)

    def download(path: Path) -> None:
        save(request.digest, path)

    def pull(folder: Path) -> None:
        result = client.get_manifest(request.repository, request.tag, **call_options)
        if "manifests" in result.manifest:
            digest = _protocol.platform_manifest(result.manifest, *request.os_architecture())
            result = client.get_manifest(request.repository, digest, **call_options)
        manifest = result.manifest
        folder.mkdir(parents=True, exist_ok=True)
        for blob in [manifest["config"], *manifest["layers"]]:
            save(blob["digest"], _protocol.blob_file(folder, blob["digest"]))
        (folder / "manifest.json").write_text(json.dumps(manifest))

    return pull if request.pull else download


if __name__ == "__main__":
    _protocol.run(
        _protocol.package_label("azure-containerregistry", "azure-containerregistry"), prepare
    )
