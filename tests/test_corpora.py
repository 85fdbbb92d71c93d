"""Corpora: the built-in text, files with clear errors, and the verified download on loopback."""

import hashlib
import http.server
import threading

import pytest
from conftest import SHARED_SHAKESPEARE

from minilm.training import corpora


def test_builtin_corpus_is_real_text_of_useful_size():
    text = corpora.builtin_text()
    assert len(text) > 200_000
    words = text.split()
    assert words.count("the") > 1000 and "statement" in words
    assert corpora.builtin_text() == text  # the same every time


def test_read_text_file_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        corpora.read_text_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="not a file"):
        corpora.read_text_file(tmp_path)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        corpora.read_text_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8.*0xe9 at offset 3"):
        corpora.read_text_file(tmp_path / "latin1.txt")
    (tmp_path / "blank.txt").write_text(" \n\n")
    with pytest.raises(ValueError, match="whitespace"):
        corpora.read_text_file(tmp_path / "blank.txt")


def test_read_text_file_reads_utf8_and_drops_a_bom(tmp_path):
    (tmp_path / "zh.txt").write_bytes("\ufeff语言模型\n".encode())
    assert corpora.read_text_file(tmp_path / "zh.txt") == "语言模型\n"


def test_load_text_prefers_the_file(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    assert corpora.load_text(data=str(tmp_path / "a.txt"))[0] == "hello"
    assert corpora.load_text()[0] == corpora.builtin_text()
    with pytest.raises(ValueError, match="unknown corpus"):
        corpora.load_text(corpus="nope")


class Server:
    """A loopback HTTP server that answers every GET with ``payload`` and counts the requests."""

    def __init__(self, payload: bytes):
        outer = self
        self.payload, self.requests = payload, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.payload)))
                self.end_headers()
                self.wfile.write(outer.payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/input.txt"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


needs_shakespeare = pytest.mark.skipif(not SHARED_SHAKESPEARE.exists(), reason="no shared copy of tinyshakespeare")


@needs_shakespeare
def test_download_verifies_and_caches(tmp_path):
    raw = SHARED_SHAKESPEARE.read_bytes()
    with Server(raw) as srv:
        path = corpora.fetch("tinyshakespeare", url=srv.url, cache=tmp_path, log=lambda *a: None)
        assert path == tmp_path / "tinyshakespeare.txt"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == corpora.DOWNLOADS["tinyshakespeare"].sha256
        assert len(path.read_text(encoding="utf-8")) == 1_115_394
        corpora.fetch("tinyshakespeare", url=srv.url, cache=tmp_path, log=lambda *a: None)
        assert srv.requests == 1  # the second call used the cache
        assert sorted(p.name for p in tmp_path.iterdir()) == ["tinyshakespeare.txt"]


@needs_shakespeare
def test_corrupted_download_is_rejected_and_deleted(tmp_path):
    raw = bytearray(SHARED_SHAKESPEARE.read_bytes())
    raw[1000] ^= 1  # one flipped bit
    with Server(bytes(raw)) as srv, pytest.raises(ValueError, match="corrupt: sha256"):
        corpora.fetch("tinyshakespeare", url=srv.url, cache=tmp_path, log=lambda *a: None)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial download remains


@needs_shakespeare
def test_damaged_cache_is_downloaded_again(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare.txt").write_text("not shakespeare")
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path))
    with Server(SHARED_SHAKESPEARE.read_bytes()) as srv:
        monkeypatch.setenv("MINILM_TINYSHAKESPEARE_URL", srv.url)
        text, source = corpora.load_text(corpus="tinyshakespeare", log=lambda *a: None)
        assert srv.requests == 1
    assert text.startswith("First Citizen:") and "tinyshakespeare" in source


def test_unreachable_server_is_a_clear_error(tmp_path):
    with Server(b"") as srv:
        url = srv.url
    with pytest.raises(ValueError, match="could not download tinyshakespeare"):
        corpora.fetch("tinyshakespeare", url=url, cache=tmp_path, log=lambda *a: None)
    assert list(tmp_path.iterdir()) == []
