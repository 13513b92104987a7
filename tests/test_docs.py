"""The documentation site: it builds, it covers the public API, and every example on it runs.

How examples in docs/**/*.md are run (the conventions for whoever writes a page):

- A ```python block is a complete program. It runs with exec() in a fresh namespace, in a fresh
  empty working directory, against a real registry of the testbed, with these names defined:
      endpoint, repository, digest, username, password   the registry, and a blob pushed there
      digests         several blobs of `repository` (the first is `digest`)
      refresh_token   a refresh token for `username` (token registry only)
      image           with `images`: a two-platform OCI image's reference, REGISTRY/REPO:v1
      artifact        with `images`: an ORAS-style artifact's reference (two titled files)
      cache_dir       an empty blob cache folder, outside the working directory (it does not
                      exist yet)
  DOCKER_CONFIG points at a config.json that holds `username`/`password` for `endpoint`.
- A ```sh block runs with `bash -e -o pipefail` the same way, with REF, REGISTRY, REPOSITORY,
  DIGEST, ACR_BLOB_USERNAME, ACR_BLOB_PASSWORD and CACHE_DIR (as cache_dir) in its environment
  (IMAGE and ARTIFACT with `images`) and the virtualenv's bin/ first on PATH.
- Other fences (```console, ```text, ...) are shown, not run.
- An HTML comment on the line right before a fence configures the block, e.g.
  `<!-- test: registry=s3 needs=progress -->`:
      placeholders     the block shows the names above with a reader's values: it is not run,
                       and may assign only names that the tests provide (checked)
      registry=NAME    the registry to run against: token (the default: Bearer tokens from a
                       token server, like ACR), anonymous, basic, or s3 (Basic auth, blobs
                       answered with 307 to presigned storage URLs; checked to have happened)
      needs=F[,G]      uses a feature that is still being built (FEATURES below): the test is
                       an expected failure while the feature is missing, and runs for real once
                       it is there
      skip REASON      not run at all: for what the testbed cannot give (an Azure AD tenant);
                       at most MAX_SKIPPED blocks in all
      output           on a ```text block right after a code block: that block's stdout, compared
                       with doctest's ELLIPSIS rule ("..." matches anything)
      images           pushes an image and an artifact first (the names `image`, `artifact`);
                       the files a pull writes (their blobs, manifests, `oci-layout`,
                       `index.json`) may remain
- After a block has run, every file it left in its working directory must be a complete copy of
  one of the blobs: examples download blobs, and nothing else (no partial file) may remain.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import doctest
import hashlib
import importlib
import inspect
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

import acr_blob
from acr_blob import AsyncBlobClient, BlobClient
from tests.conftest import TOKEN_AUTH
from tools.testbed import BlobFactory, Deployment, push_artifact, push_image

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
MAX_SKIPPED = 2
# The blobs each example gets: an odd size of a few MiB (several reads, and enough for parallel
# ranges to be worth it), then two small ones for `digests`.
BLOB_SIZES = (4 * 1024 * 1024 + 13, 100_000, 1)
PYTHON_NAMES = frozenset(
    {
        "endpoint",
        "repository",
        "digest",
        "digests",
        "username",
        "password",
        "refresh_token",
        "image",
        "artifact",
        "cache_dir",
    }
)
SHELL_NAMES = frozenset(
    {
        "REF",
        "REGISTRY",
        "REPOSITORY",
        "DIGEST",
        "ACR_BLOB_USERNAME",
        "ACR_BLOB_PASSWORD",
        "IMAGE",
        "ARTIFACT",
        "CACHE_DIR",
    }
)
# Pages whose name the site must have, besides the API reference.
PAGES = [
    "index.md",
    "authentication.md",
    "downloads-and-verification.md",
    "redirects-and-security.md",
    "errors.md",
    "cli.md",
    "regenerating.md",
    "benchmarks.md",
    "comparison.md",
    "parity.md",
    "mirrors-and-cache.md",
    "pull.md",
]
# Public names whose docstring lives in a file this test's author could not edit yet (the
# module-level data of _config.py): they must get a docstring with an example there. Names may
# leave this set, never join it.
PENDING_DOCSTRINGS: frozenset[str] = frozenset()


def _acr_blob_help(*args: str) -> str:
    result = subprocess.run(
        [str(BIN / "acr-blob"), *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout


# Features documented ahead of their landing: name -> whether this tree has it.
def _takes(function: Callable[..., object], *names: str) -> bool:
    return set(names) <= set(inspect.signature(function).parameters)


FEATURES: dict[str, Callable[[], bool]] = {
    "progress": lambda: (
        _takes(BlobClient.download_blob, "progress")
        and _takes(BlobClient.download_blob_to_file, "progress")
    ),
    "async-progress": lambda: (
        _takes(AsyncBlobClient.download_blob, "progress")
        and _takes(AsyncBlobClient.download_blob_to_file, "progress")
    ),
    "max_concurrency": lambda: (
        _takes(BlobClient, "max_concurrency")
        and _takes(BlobClient.download_blob_to_file, "max_concurrency")
    ),
    # `acr-blob --help` lists the subcommands as {get,head,exists}.
    "cli-references": lambda: re.search(r"\{[\w,]*\bexists\b", _acr_blob_help()) is not None,
    "cli-max-concurrency": lambda: "--max-concurrency" in _acr_blob_help("get"),
    "cli-pull": lambda: re.search(r"\{[\w,]*\bpull\b", _acr_blob_help()) is not None,
    "cli-mirrors": lambda: "--hosts-dir" in _acr_blob_help("get"),
    # `acr-blob --help` lists the subcommands as {get,head,exists,cache}.
    "cli-cache": lambda: (
        re.search(r"\{[\w,]*\bcache\b", _acr_blob_help()) is not None
        and "--offline" in _acr_blob_help("get")
    ),
}


@cache
def has_feature(name: str) -> bool:
    return FEATURES[name]()


# ---------------------------------------------------------------------------------------------
# Reading the examples out of the pages


@dataclass
class Block:
    page: str
    line: int
    language: str
    source: str
    options: dict[str, str] = field(default_factory=dict)
    output: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def needs(self) -> list[str]:
        return [n for n in self.options.get("needs", "").split(",") if n]


_FENCE = re.compile(r"^```(?P<language>[\w-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*test:\s*(?P<options>.*?)\s*-->\s*$")


def _options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    words = text.split()
    for index, word in enumerate(words):
        if word == "skip":
            options["skip"] = " ".join(words[index + 1 :]) or "no reason given"
            break
        name, _, value = word.partition("=")
        options[name] = value
    return options


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, with its marker; ``output`` blocks joined to their code."""
    page = path.relative_to(DOCS).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        start = index
        end = start + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page}:{start + 1}: a fence that never closes")
        marker = _MARKER.match(lines[start - 1]) if start else None
        options = _options(marker.group("options")) if marker else {}
        source = "\n".join(lines[start + 1 : end]) + "\n"
        if "output" in options:
            if not blocks or blocks[-1].output is not None:
                raise AssertionError(f"{page}:{start + 1}: an output block follows no code block")
            blocks[-1].output = source
        else:
            blocks.append(Block(page, start + 1, fence.group("language"), source, options))
        index = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in sorted(DOCS.rglob("*.md")) for block in read_blocks(path)]


def runnable(block: Block) -> bool:
    return block.language in ("python", "sh") and "placeholders" not in block.options


BLOCKS = all_blocks()
RUNNABLE = [b for b in BLOCKS if runnable(b) and "skip" not in b.options]


# ---------------------------------------------------------------------------------------------
# The site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mkdocs build --strict` of the real configuration, into a temporary folder."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            str(BIN / "mkdocs"),
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(target),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return target


def _page_html(site: Path, page: str) -> str:
    name = page.removesuffix(".md")
    path = site / "index.html" if name == "index" else site / name / "index.html"
    assert path.is_file(), f"{page} was not built"
    return path.read_text(encoding="utf-8")


def test_site_builds_with_every_page(site: Path) -> None:
    for page in PAGES:
        text = _page_html(site, page)
        assert "<h1" in text, page
    assert "download_blob_to_file" in _page_html(site, "api/clients.md")
    # The benchmark and parity pages are the very files `make bench` and `make compare` write.
    assert "Blob download benchmarks" in _page_html(site, "benchmarks.md")
    assert "Parity" in _page_html(site, "parity.md")


def test_api_reference_documents_every_public_name(site: Path) -> None:
    reference = "".join(_page_html(site, p.relative_to(DOCS).as_posix()) for p in api_pages())
    missing = [n for n in acr_blob.__all__ if f'id="acr_blob.{n}"' not in reference]
    assert not missing, f"not in the API reference (docs/api/*.md): {missing}"
    # Docstrings are rendered, their reST roles turned into links (tools/mkdocs_hooks.py).
    assert "Download, verify, fsync and rename" in reference
    assert ":class:" not in reference
    assert 'href="#acr_blob.BlobClient.download_blob_to_file"' in reference


def api_pages() -> list[Path]:
    return sorted((DOCS / "api").glob("*.md"))


def test_every_public_name_has_a_docstring_with_an_example() -> None:
    griffe = importlib.import_module("griffe")
    package = griffe.load("acr_blob", search_paths=[str(ROOT / "overlay"), str(ROOT / "generated")])
    lacking = []
    for name in acr_blob.__all__:
        docstring = package[name].docstring
        if docstring is None or "Example" not in docstring.value:
            lacking.append(name)
    assert set(lacking) <= PENDING_DOCSTRINGS, f"no docstring with an example: {lacking}"


def test_errors_page_covers_every_exception() -> None:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    errors = importlib.import_module("acr_blob.errors")
    for name in errors.__all__:
        assert issubclass(getattr(acr_blob, name), acr_blob.BlobError)
        if name != "BlobError":
            assert f"\n### {name}\n" in text, f"errors.md has no section for {name}"
        assert name in text.split("```text", 2)[1], f"{name} is missing from the hierarchy"


def test_docstring_doctests_pass() -> None:
    attempted = 0
    for module in (
        "references",
        "retry",
        "challenges",
        "_protocol",
        "errors",
        "models",
        "_log_redaction",
        "_config",
    ):
        result = doctest.testmod(importlib.import_module(f"acr_blob.{module}"))
        assert result.failed == 0, module
        attempted += result.attempted
    assert attempted >= 10


def test_readme_links_to_the_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Documentation" in readme
    assert "make docs" in readme
    assert "docs/index.md" in readme


# ---------------------------------------------------------------------------------------------
# The conventions themselves


def test_examples_are_found_and_few_are_skipped() -> None:
    skipped = [b.id for b in BLOCKS if runnable(b) and "skip" in b.options]
    assert len(skipped) <= MAX_SKIPPED, f"too many examples not run: {skipped}"
    assert len(RUNNABLE) >= 25
    pages = {b.page for b in RUNNABLE}
    for page in ("index.md", "authentication.md", "errors.md", "cli.md"):
        assert page in pages
    for block in BLOCKS:
        unknown = set(block.options) - {"placeholders", "registry", "needs", "skip", "images"}
        assert not unknown, f"{block.id}: unknown test options {unknown}"
        assert set(block.needs) <= set(FEATURES), f"{block.id}: unknown feature {block.needs}"
        assert block.options.get("registry", "token") in DEPLOYMENTS, block.id


def test_placeholders_name_exactly_what_the_tests_provide() -> None:
    python: set[str] = set()
    shell: set[str] = set()
    for block in BLOCKS:
        if "placeholders" not in block.options:
            continue
        if block.language == "python":
            for node in ast.walk(ast.parse(block.source)):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    python.add(node.id)
        else:
            assert block.language == "sh", block.id
            shell.update(re.findall(r"\b([A-Z_]+)=", block.source))
    assert python == PYTHON_NAMES
    assert shell == SHELL_NAMES


# ---------------------------------------------------------------------------------------------
# Running the examples

# The registry fixture behind each `registry=` option.
DEPLOYMENTS = {
    "token": "token_registry",
    "anonymous": "registry",
    "basic": "basic_registry",
    "s3": "s3_basic_registry",
}


@dataclass
class Setting:
    deployment: Deployment
    repository: str
    blobs: dict[str, bytes]
    names: dict[str, object]
    environment: dict[str, str]


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """Examples may configure logging; the rest of the session must not inherit it."""
    root = logging.getLogger()
    loggers = [root, logging.getLogger("acr_blob"), logging.getLogger("httpx")]
    levels = [logger.level for logger in loggers]
    handlers = list(root.handlers)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)


@pytest.fixture
def setting(
    request: pytest.FixtureRequest,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Setting:
    block: Block = request.param
    kind = block.options.get("registry", "token")
    deployment: Deployment = request.getfixturevalue(DEPLOYMENTS[kind])
    pushed = [blob_factory(deployment, size) for size in BLOB_SIZES]
    blobs = {digest: data for digest, data in pushed}
    digest = pushed[0].digest
    # Beside the working directory, whose files must all be downloaded blobs.
    cache_dir = str(tmp_path / "cache")
    names: dict[str, object] = {
        "__name__": "__main__",
        "endpoint": deployment.url,
        "repository": repository,
        "digest": digest,
        "digests": [p.digest for p in pushed],
        "cache_dir": cache_dir,
    }
    environment = {
        "REGISTRY": deployment.url,
        "REPOSITORY": repository,
        "DIGEST": digest,
        # The CLI's image-style reference; the testbed's registries are plain http on loopback.
        "REF": f"{deployment.url}/{repository}@{digest}",
        "CACHE_DIR": cache_dir,
    }
    if deployment.auth is not None:
        username, password = deployment.auth
        names.update(username=username, password=password)
        environment.update(ACR_BLOB_USERNAME=username, ACR_BLOB_PASSWORD=password)
        config = tmp_path / "docker-config"
        config.mkdir()
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        host = f"{deployment.host}:{deployment.port}"
        (config / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
    if deployment.token_server is not None:
        names["refresh_token"] = deployment.token_server.issue_refresh_token(TOKEN_AUTH[0])
    if "images" in block.options:
        registry = f"{deployment.url}/{repository}"
        image = push_image(deployment, f"{repository}/image", "v1")
        files = {"weights.bin": os.urandom(200_000), "README.md": b"# a model\n"}
        artifact = push_artifact(deployment, f"{repository}/model", "v1", files)
        names.update(image=f"{registry}/image:v1", artifact=f"{registry}/model:v1")
        environment.update(IMAGE=f"{registry}/image:v1", ARTIFACT=f"{registry}/model:v1")
        contents = [*image.blobs.values(), *image.manifests.values(), artifact.manifest]
        contents += [artifact.config, *artifact.layers]
        blobs.update({content.digest: content.data for content in contents})
    # As for the shell blocks: a cache or offline mode of the developer's must not leak in.
    for name in [name for name in os.environ if name.startswith("ACR_BLOB_")]:
        monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return Setting(deployment, repository, blobs, names, environment)


def _run_python(block: Block, setting: Setting) -> str:
    code = compile(block.source, f"docs/{block.id}", "exec")
    stdout = io.StringIO()
    with _logging_restored(), contextlib.redirect_stdout(stdout):
        exec(code, dict(setting.names))
    return stdout.getvalue()


def _run_shell(block: Block, setting: Setting) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACR_BLOB_")}
    environment.update(setting.environment)
    environment["PATH"] = f"{BIN}{os.pathsep}{environment.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.source],
        capture_output=True,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        f"docs/{block.id} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


@pytest.mark.parametrize("setting", RUNNABLE, ids=[b.id for b in RUNNABLE], indirect=True)
def test_example_runs(setting: Setting, request: pytest.FixtureRequest) -> None:
    block: Block = request.node.callspec.params["setting"]
    missing = [name for name in block.needs if not has_feature(name)]
    if missing:
        pytest.xfail(f"documents {', '.join(missing)}, which this tree does not have yet")

    run = _run_python if block.language == "python" else _run_shell
    output = run(block, setting)

    if block.output is not None:
        checker = doctest.OutputChecker()
        assert checker.check_output(block.output, output, doctest.ELLIPSIS), (
            f"docs/{block.id} printed:\n{output}\nthe page shows:\n{block.output}"
        )
    work = Path.cwd()
    for path in sorted(work.rglob("*")):
        if "images" in block.options and path.name in ("oci-layout", "index.json"):
            continue
        if path.is_file():
            digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest in setting.blobs, f"docs/{block.id} left {path.relative_to(work)}"
    proxy = setting.deployment.proxy
    if proxy is not None:
        # The example went through a 307 to storage, and no credential followed it there.
        assert proxy.presigned_requests, f"docs/{block.id} never reached storage"
        assert all(r.header("Authorization") is None for r in proxy.presigned_requests)
