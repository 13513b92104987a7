"""Start-up cost: `import acr_blob` and `acr-blob --help` load neither the clients nor what they
bring (asyncio, concurrent.futures, dateutil, the generated client); every public name still
resolves, on first use.

Each check runs in a fresh interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# What `import acr_blob` must leave unloaded: the async client imports asyncio (and with it
# concurrent.futures), the sync client the file machinery, auth the generated client; dateutil
# is only for HTTP dates and token times.
NOT_AT_IMPORT = [
    "asyncio",
    "concurrent.futures",
    "dateutil",
    "acr_blob._async",
    "acr_blob._sync",
    "acr_blob_api",
]


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def loaded_after(code: str) -> set[str]:
    result = python(f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))")
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", NOT_AT_IMPORT)
def test_import_acr_blob_leaves_out(module: str) -> None:
    assert module not in loaded_after("import acr_blob")


def test_auth_retry_docker_config_and_the_cli_load_no_asyncio_nor_dateutil() -> None:
    # RegistryAuth serves plain httpx clients too; asyncio is for its async flow, dateutil for
    # a token server's issued_at and a Retry-After date, each imported where it is needed.
    modules = "acr_blob.auth, acr_blob.retry, acr_blob.docker_config, acr_blob.cli"
    loaded = loaded_after(f"import {modules}")
    assert not loaded & {"asyncio", "concurrent.futures", "dateutil"}


def test_import_acr_blob_still_redacts_logs() -> None:
    # The one side effect of the import, kept eager.
    code = "import acr_blob, acr_blob._log_redaction as r\nassert r.log_redaction_enabled()"
    result = python(code)
    assert result.returncode == 0, result.stderr


def test_every_public_name_resolves_on_first_use() -> None:
    code = """
import acr_blob, sys
assert "asyncio" not in sys.modules
assert acr_blob.AsyncBlobClient.__name__ == "AsyncBlobClient"
assert "acr_blob._async" in sys.modules  # asyncio itself loads when a task first runs
missing = [name for name in acr_blob.__all__ if getattr(acr_blob, name, None) is None]
assert not missing, missing
assert set(acr_blob.__all__) <= set(dir(acr_blob))
assert acr_blob.BlobClient is sys.modules["acr_blob._sync"].BlobClient
assert acr_blob.RegistryAuth is sys.modules["acr_blob.auth"].RegistryAuth
try:
    acr_blob.NoSuchName
except AttributeError as error:
    assert "NoSuchName" in str(error)
else:
    raise AssertionError("acr_blob.NoSuchName resolved")
namespace = {}
exec("from acr_blob import *", namespace)
assert set(acr_blob.__all__) <= set(namespace)
"""
    result = python(code)
    assert result.returncode == 0, result.stderr


def test_from_import_of_a_client_works_in_a_fresh_interpreter() -> None:
    assert "acr_blob._sync" in loaded_after("from acr_blob import BlobClient")
    assert "asyncio" not in loaded_after("from acr_blob import BlobProperties, RetryPolicy")


def test_acr_blob_help_imports_neither_client_nor_asyncio() -> None:
    # -X importtime names every module the real `python -m acr_blob --help` imports.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "acr_blob", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: acr-blob" in result.stdout
    imported = {
        line.rpartition("|")[2].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "acr_blob.cli" in imported  # the parse is right
    assert not imported & set(NOT_AT_IMPORT), imported & set(NOT_AT_IMPORT)


def test_the_lazy_map_matches_the_type_checking_imports() -> None:
    """Type checkers see each lazy name where __getattr__ finds it, and every name is somewhere."""
    import ast
    from pathlib import Path

    import acr_blob

    source = Path(acr_blob.__file__).read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            typed = {
                alias.name: "." * statement.level + (statement.module or "")
                for statement in node.body
                if isinstance(statement, ast.ImportFrom)
                for alias in statement.names
            }
    assert typed == acr_blob._LAZY
    eager = {name for name in acr_blob.__all__ if name in vars(acr_blob)} - set(typed)
    assert set(acr_blob.__all__) == eager | set(typed)


def test_the_sync_client_and_its_download_machinery_load_no_asyncio() -> None:
    # The clients are generated from one async source; the sync twin and the primitives it
    # runs on (_concurrency, _fast_read) must not pull asyncio in for sync users.
    code = "import acr_blob\nacr_blob.BlobClient\nimport acr_blob._sync.ranged"
    assert not loaded_after(code) & {"asyncio", "concurrent.futures"}
