"""ssdn.data.download against a local HTTP server on 127.0.0.1 serving copies (in tmp_path) of real files."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssdn.data import download
from ssdn.data.checksum import sha256_file
from ssdn.data.download import DownloadError, download_testset
from ssdn.data.testsets import TestSetSpec, get_testset


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; under /short/ it announces the full length, sends half the body and hangs up."""

    def do_GET(self) -> None:
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / "good" / self.path.removeprefix("/short/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def small_spec() -> TestSetSpec:
    """KODAK reduced to its first two files, to stay fast."""
    spec = get_testset("kodak")
    return dataclasses.replace(spec, files=spec.files[:2])


@pytest.fixture
def server(tmp_path: Path, data_root: Path, small_spec: TestSetSpec) -> Iterator[str]:
    """http://127.0.0.1:PORT with good/ (exact copies), bad/ (a byte flipped), short/ (truncated body)."""
    srv_dir = tmp_path / "srv"
    for sub in ("good", "bad"):
        (srv_dir / sub).mkdir(parents=True)
    for entry in small_spec.files:
        shutil.copyfile(data_root / "kodak" / entry.name, srv_dir / "good" / entry.name)
        data = bytearray((data_root / "kodak" / entry.name).read_bytes())
        data[1000] ^= 0x01
        (srv_dir / "bad" / entry.name).write_bytes(bytes(data))
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(srv_dir))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_download_verifies_and_is_idempotent(tmp_path: Path, server: str, small_spec: TestSetSpec) -> None:
    root = tmp_path / "root"
    report = download_testset(small_spec, root=root, base_url=f"{server}/good/", log=lambda _: None)
    assert report.fetched == ["kodim01.png", "kodim02.png"] and report.skipped == []
    folder = root / "kodak"
    assert _leftovers(folder) == ["kodim01.png", "kodim02.png"]  # no temp files
    for entry in small_spec.files:
        assert sha256_file(folder / entry.name) == entry.sha256
    mtimes = [(folder / e.name).stat().st_mtime_ns for e in small_spec.files]

    again = download_testset(small_spec, root=root, base_url=f"{server}/good/", log=lambda _: None)
    assert again.fetched == [] and again.skipped == ["kodim01.png", "kodim02.png"]
    assert [(folder / e.name).stat().st_mtime_ns for e in small_spec.files] == mtimes


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, server: str, small_spec: TestSetSpec) -> None:
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match=r"kodim01\.png.*sha256 mismatch"):
        download_testset(small_spec, root=root, base_url=f"{server}/bad/", log=lambda _: None)
    assert _leftovers(root / "kodak") == []


def test_interrupted_transfer_leaves_nothing(tmp_path: Path, server: str, small_spec: TestSetSpec) -> None:
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match=r"could not fetch kodim01\.png") as info:
        download_testset(small_spec, root=root, base_url=f"{server}/short/", timeout=10, log=lambda _: None)
    assert "expected 736501" in str(info.value)  # the short body is caught, whatever the HTTP layer says
    assert _leftovers(root / "kodak") == []


def test_wrong_local_file_is_replaced_and_sources_fall_back(
    tmp_path: Path, server: str, small_spec: TestSetSpec
) -> None:
    root = tmp_path / "root"
    (root / "kodak").mkdir(parents=True)
    (root / "kodak" / "kodim02.png").write_bytes(b"stale")
    spec = dataclasses.replace(small_spec, sources=(f"{server}/missing/{{name}}", f"{server}/good/{{name}}"))
    report = download_testset(spec, root=root, log=lambda _: None)
    assert report.fetched == ["kodim01.png", "kodim02.png"]
    assert sha256_file(root / "kodak" / "kodim02.png") == spec.files[1].sha256
    assert _leftovers(root / "kodak") == ["kodim01.png", "kodim02.png"]


def test_cli(
    tmp_path: Path,
    server: str,
    small_spec: TestSetSpec,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(download, "get_testset", lambda name: small_spec)
    root = tmp_path / "root"
    assert download.main(["kodak", "--root", str(root), "--base-url", f"{server}/good"]) == 0
    assert "2 fetched" in capsys.readouterr().out
    assert download.main(["kodak", "--root", str(tmp_path / "r2"), "--base-url", f"{server}/bad"]) == 1
    assert "kodim01.png" in capsys.readouterr().err


def test_file_url() -> None:
    assert download.file_url("http://h/a/", "x.png") == "http://h/a/x.png"
    assert download.file_url("http://h/a", "x.png") == "http://h/a/x.png"
    assert download.file_url("http://h/{name}?raw=1", "x.png") == "http://h/x.png?raw=1"
