"""The runner for python-dxf (PyPI): `PYTHON python_dxf.py < request.json > observation.json`.

One `dxf.DXF(host, repository, auth)` per run, entered as a context manager so that its
requests share one session; each download is `pull_blob(digest)`, an iterator of 8 KiB
chunks written to the file as they come (python-dxf has no call that saves to a path).
The `auth` callback is the one python-dxf's README shows: on a 401 it calls
`authenticate(username, password, response=...)` (anonymously without credentials), which
does Docker's token protocol on a Bearer challenge and sends Basic auth otherwise.
Options set, and why: `insecure=True` for an http registry (python-dxf's name for plain http),
`tlsverify=CA` for an https one with a private CA.

python-dxf has no pull, but it resolves a tag to one platform's manifest itself:
`get_manifest(tag, platform="os/arch")` fetches the index, then that platform's manifest by
digest (each checked against its Docker-Content-Digest), and returns it as text;
`get_digest(manifest=...)` and `get_alias(manifest=...)` give its config's and its layers'
digests. The runner pulls each of them with `pull_blob` (which checks the digest) into
`pull-<i>/<hex>` and writes the manifest's text, encoded as UTF-8 (the bytes it came as),
to `manifest.json` last. It has nothing that writes layers as files named by their titles:
such a request is reported `unsupported`.

python-dxf refuses to authenticate over plain http (`authenticate` raises
`DXFAuthInsecureError` whenever `insecure` is set, with no option to allow it): a request
with credentials for an http registry is reported `unsupported`.
See _protocol.py for the protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tools.compare.runners import _protocol
else:
    try:
        import _protocol  # run as a script: this folder is first on sys.path
    except ImportError:
        from tools.compare.runners import _protocol

NO_AUTH_OVER_HTTP = (
    "no auth over plain http: authenticate() raises DXFAuthInsecureError whenever "
    "insecure=True, and no option allows it"
)

NO_FILES = (
    "no pull: get_manifest, get_alias and pull_blob only, nothing that writes layers as files "
    "named by their titles"
)


def prepare(
    request: _protocol.Request, closer: _protocol.Closer
) -> _protocol.Download | _protocol.Unsupported:
    if request.credentials is not None and not request.https:
        return _protocol.Unsupported(NO_AUTH_OVER_HTTP)
    if request.pull == "files":
        return _protocol.Unsupported(NO_FILES)
    parallel = _protocol.no_parallel(request, "pull_blob streams one GET in 8 KiB chunks")
    if parallel is not None:
        return parallel
    import dxf  # type: ignore[import-untyped,import-not-found,unused-ignore]

    credentials = request.credentials

    def auth(client: Any, response: Any) -> None:
        if credentials is None:
            client.authenticate(response=response)
        else:
            client.authenticate(credentials[0], credentials[1], response=response)

    # Any: python-dxf's own annotations make pull_blob's result a Union with its (iter, size) form.
    client: Any = dxf.DXF(
        request.host,
        request.repository,
        auth,
        insecure=not request.https,
        tlsverify=request.ca_cert if request.https and request.ca_cert else True,
    )
    closer.enter_context(client)

    def save(digest: str, path: Path) -> None:
        chunks = client.pull_blob(digest)
        with path.open("wb") as file:
            for chunk in chunks:
                file.write(chunk)

    def download(path: Path) -> None:
        save(request.digest, path)

    def pull(folder: Path) -> None:
        manifest: str = client.get_manifest(request.tag, platform=request.platform)
        config: str = client.get_digest(manifest=manifest)
        layers: list[str] = client.get_alias(manifest=manifest)
        folder.mkdir(parents=True, exist_ok=True)
        for digest in [config, *layers]:
            save(digest, _protocol.blob_file(folder, digest))
        (folder / "manifest.json").write_bytes(manifest.encode("utf-8"))

    return pull if request.pull else download


if __name__ == "__main__":
    _protocol.run(_protocol.package_label("python-dxf", "python-dxf"), prepare)
