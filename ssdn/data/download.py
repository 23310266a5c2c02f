"""Fetch an evaluation set from its public sources and verify every file's sha256.

    python -m ssdn.data.download kodak [bsd300 set14 | all] [--root DIR] [--base-url URL]

Files go to ``ROOT/<folder>/<name>`` (``--root``, else ``$SSDN_DATA_ROOT``, else ``./data``). BSD300's official
release is a tarball with no per-file URLs or hashes, so the default source is a pinned GitHub mirror of
BSDS500 whose ``val/`` split is the BSDS300 test split; ``--base-url`` points at a mirror or a served copy of
the tarball's ``images/test/`` (the checksums still decide). A file is renamed into place only when its size
and sha256 match, so no partial or wrong file is left, and a re-run fetches only what is missing or wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ssdn.data.checksum import sha256_file
from ssdn.data.testsets import FileEntry, TestSetSpec, get_testset, resolve_root, testset_names
from ssdn.errors import UserError
from ssdn.utils import atomic_path

_CHUNK = 1 << 16


class DownloadError(UserError, RuntimeError):
    """A file could not be fetched from any source, or what arrived failed verification."""


@dataclass
class DownloadReport:
    fetched: list[str]
    skipped: list[str]


def file_url(template: str, name: str) -> str:
    """``template`` with ``{name}`` substituted, or ``name`` appended to a base URL."""
    if "{name}" in template:
        return template.replace("{name}", name)
    return template.rstrip("/") + "/" + name


def fetch_file(url: str, entry: FileEntry, dest: Path, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` atomically, accepting it only if size and sha256 match ``entry``."""
    with atomic_path(dest) as tmp:
        digest = hashlib.sha256()
        size = 0
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(_CHUNK):
                digest.update(block)
                out.write(block)
                size += len(block)
        if size != entry.bytes:
            raise DownloadError(f"{entry.name}: received {size} bytes from {url}, expected {entry.bytes}")
        if digest.hexdigest() != entry.sha256:
            raise DownloadError(
                f"{entry.name}: sha256 mismatch for {url}: got {digest.hexdigest()}, expected {entry.sha256}"
            )


def download_testset(
    spec: TestSetSpec | str,
    root: str | Path | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
    log: Callable[[str], None] = print,
) -> DownloadReport:
    """Make ``ROOT/<folder>`` hold every file of the set with the registered checksum.

    The sources of ``testsets.json`` are tried in order; ``base_url`` replaces them (``file_url``). Files
    already present with the right sha256 are skipped.
    """
    spec = get_testset(spec) if isinstance(spec, str) else spec
    folder = resolve_root(root) / spec.folder
    sources = (base_url,) if base_url else spec.sources
    report = DownloadReport([], [])
    for entry in spec.files:
        dest = folder / entry.name
        if dest.is_file() and sha256_file(dest) == entry.sha256:
            report.skipped.append(entry.name)
            continue
        errors = []
        for template in sources:
            url = file_url(template, entry.name)
            try:
                fetch_file(url, entry, dest, timeout=timeout)
                break
            except (DownloadError, OSError, ValueError, http.client.HTTPException) as exc:
                # OSError covers URLError/HTTPError and timeouts; HTTPException a connection closed mid-body
                errors.append(f"{url}: {type(exc).__name__}: {exc}")
        else:
            raise DownloadError(
                f"test set {spec.name!r}: could not fetch {entry.name} into {folder}:\n  "
                + "\n  ".join(errors)
            )
        log(f"{spec.name}: fetched {entry.name}")
        report.fetched.append(entry.name)
    done = f"{len(report.fetched)} fetched, {len(report.skipped)} already present and verified"
    log(f"{spec.name}: {done}, in {folder}")
    return report


def main(argv: list[str] | None = None) -> int:
    names = testset_names()
    parser = argparse.ArgumentParser(
        prog="python -m ssdn.data.download", description="Download and verify the evaluation sets."
    )
    parser.add_argument("sets", nargs="+", metavar="SET", help=f"one or more of {', '.join(names)}, or 'all'")
    parser.add_argument("--root", help="data root (default: $SSDN_DATA_ROOT, else ./data)")
    parser.add_argument("--base-url", help="fetch every file from this URL prefix (or template with {name})")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per connection attempt")
    args = parser.parse_args(argv)

    wanted = names if "all" in args.sets else args.sets
    try:
        specs = [get_testset(n) for n in wanted]
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    try:
        for spec in specs:
            download_testset(spec, args.root, args.base_url, args.timeout)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
