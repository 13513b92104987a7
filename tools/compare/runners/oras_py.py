"""The runner for oras-py (PyPI `oras`): `PYTHON oras_py.py < request.json > observation.json`.

One `oras.provider.Registry` per run; each download is its `download_blob(container, digest,
outfile)`, which streams the answer to the file in 8 KiB pieces. Options set, and why:
- `insecure=True` for an http registry (oras-py's name for plain http), `tls_verify=CA` for an
  https one with a private CA;
- the auth backend: `basic` (Basic credentials sent after a 401) for an htpasswd registry,
  the default `token` (Docker's token protocol, with the Basic credentials at the token
  realm) for a registry that wants bearer tokens (the request's `token_auth`: a token
  server, or the ACR deployment, whose `/oauth2/token` takes Basic credentials); oras-py
  needs to be told which;
- credentials through `registry.auth.set_basic_auth`, not `login()`, which writes them to
  ~/.docker/config.json.

Pulls are its `pull(target="HOST:PORT/REPOSITORY:TAG", outdir=FOLDER)` (`OrasClient` is the
same class), for images and artifacts alike: it has no platform argument. It fetches the
manifest the tag names with any of the OCI and Docker manifest and index types in Accept,
then writes each entry of its `layers` to `outdir/<title>` (an untitled layer to
`outdir/<digest>`); it never writes the manifest or the config. An index has no `layers`: the
pull of an image by tag downloads nothing and returns `[]` without an error.
See _protocol.py for the protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.compare.runners import _protocol
else:
    try:
        import _protocol  # run as a script: this folder is first on sys.path
    except ImportError:
        from tools.compare.runners import _protocol


def prepare(
    request: _protocol.Request, closer: _protocol.Closer
) -> _protocol.Download | _protocol.Unsupported:
    parallel = _protocol.no_parallel(request, "download_blob streams one GET in 8 KiB reads")
    if parallel is not None:
        return parallel
    import oras.provider  # type: ignore[import-untyped,import-not-found,unused-ignore]

    backend = "token" if request.token_auth else "basic"
    registry = oras.provider.Registry(
        hostname=request.host,
        insecure=not request.https,
        tls_verify=request.ca_cert if request.https and request.ca_cert else True,
        auth_backend=backend,
    )
    closer.callback(registry.session.close)
    if request.credentials is not None:
        username, password = request.credentials
        registry.auth.set_basic_auth(username, password)
    # The registry in the name too, so that a repository whose first part has a dot or a
    # colon is not taken for a host name.
    container = f"{request.host}/{request.repository}"

    def download(path: Path) -> None:
        registry.download_blob(container, request.digest, str(path))

    def pull(path: Path) -> None:
        registry.pull(target=f"{container}:{request.tag}", outdir=str(path))

    return pull if request.pull else download


if __name__ == "__main__":
    _protocol.run(_protocol.package_label("oras-py", "oras"), prepare)
