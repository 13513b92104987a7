"""The runner for python-dxf (PyPI): `PYTHON python_dxf.py < request.json > observation.json`.

One `dxf.DXF(host, repository, auth)` per run, entered as a context manager so that its
requests share one session; each download is `pull_blob(digest)`, an iterator of 8 KiB
chunks written to the file as they come (python-dxf has no call that saves to a path).
The `auth` callback is the one python-dxf's README shows: on a 401 it calls
`authenticate(username, password, response=...)` (anonymously without credentials), which
does Docker's token protocol on a Bearer challenge and sends Basic auth otherwise.
Options set, and why: `insecure=True` for an http registry (python-dxf's name for plain http),
`tlsverify=CA` for an https one with a private CA.

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


def prepare(
    request: _protocol.Request, closer: _protocol.Closer
) -> _protocol.Download | _protocol.Unsupported:
    if request.credentials is not None and not request.https:
        return _protocol.Unsupported(NO_AUTH_OVER_HTTP)
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

    def download(path: Path) -> None:
        chunks = client.pull_blob(request.digest)
        with path.open("wb") as file:
            for chunk in chunks:
                file.write(chunk)

    return download


if __name__ == "__main__":
    _protocol.run(_protocol.package_label("python-dxf", "python-dxf"), prepare)
