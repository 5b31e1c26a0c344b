"""The OIP spec location setting: a directory, the file itself or an http(s) URL (here a real HTTP server
on 127.0.0.1 serving a stand-in document); ../shared by default where it exists, else the published file."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from .serve_helpers import OIP_SPEC_URL, REPO, SPEC_FILE, oip_spec_locations, read_oip_spec

DOC = "openapi: 3.0.0\ninfo: {title: stand-in, version: '2.0'}\npaths: {}\n"


@pytest.fixture
def spec_dir(tmp_path):
    (tmp_path / SPEC_FILE).write_text(DOC)
    return tmp_path


@pytest.fixture
def http_root(spec_dir):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(spec_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_directory_a_file_or_a_url(spec_dir, http_root):
    assert read_oip_spec(str(spec_dir)) == DOC
    assert read_oip_spec(str(spec_dir / SPEC_FILE)) == DOC
    assert read_oip_spec(http_root) == DOC  # a directory URL gets the file name appended
    assert read_oip_spec(f"{http_root}/{SPEC_FILE}") == DOC
    with pytest.raises(OSError):
        read_oip_spec(f"{http_root}/missing/")
    with pytest.raises(OSError):
        read_oip_spec(str(spec_dir / "nowhere"))


def test_default_is_shared_where_it_exists_else_the_published_file(monkeypatch):
    monkeypatch.delenv("OIP_SPEC_LOCATION", raising=False)
    shared = REPO.parent / "shared" / "specs" / "oip"
    expected = [str(shared), OIP_SPEC_URL] if shared.is_dir() else [OIP_SPEC_URL]
    assert oip_spec_locations() == expected
    assert OIP_SPEC_URL.endswith("kserve/open-inference-protocol/main/specification/protocol/" + SPEC_FILE)
    monkeypatch.setenv("OIP_SPEC_LOCATION", "/somewhere/else")
    assert oip_spec_locations() == ["/somewhere/else"]
