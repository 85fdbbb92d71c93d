"""Where the text comes from: the built-in corpus, a file, or a verified download.

    pydoc             built in, no download: the topics of the Python Language
                      Reference that every Python installation carries for
                      ``help()`` (module ``pydoc_data.topics``; about 465,000
                      characters of English prose and code for Python 3.11)
    tinyshakespeare   1,115,394 characters of Shakespeare, downloaded once into
                      the cache directory and checked against its sha256
    --data FILE       any UTF-8 text file

The cache directory is $MINILM_CACHE, or ~/.cache/minilm.  A download goes
to a temporary file first and is renamed into place only after its sha256
matches, so a broken or tampered download never lands in the cache.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from minilm.training.paths import publish


@dataclass(frozen=True)
class Download:
    url: str
    sha256: str
    n_chars: int


DOWNLOADS = {
    "tinyshakespeare": Download(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        n_chars=1_115_394,
    ),
}
BUILTIN = "pydoc"
CORPORA = [BUILTIN, *DOWNLOADS]


def builtin_text() -> str:
    """The Python Language Reference topics of ``help()``, in sorted order of their names."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # a stripped-down Python without its documentation data
        raise ValueError("the built-in corpus needs the standard module pydoc_data, which this Python "
                         "lacks; use --data FILE or --corpus tinyshakespeare") from e
    return "\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n"


def read_text_file(path) -> str:
    """The text of a UTF-8 file; a ValueError naming the problem if it is missing, empty or not UTF-8."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"no such file: {p}")
    if not p.is_file():
        raise ValueError(f"not a file: {p}")
    raw = p.read_bytes()
    if not raw:
        raise ValueError(f"file is empty: {p}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"file is not UTF-8 text: {p} (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    if text.startswith("\ufeff"):  # a byte-order mark is not part of the text
        text = text[1:]
    if not text.strip():
        raise ValueError(f"file holds only whitespace: {p}")
    return text


def cache_dir() -> Path:
    return Path(os.environ.get("MINILM_CACHE") or Path.home() / ".cache" / "minilm")


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, url: str | None = None, cache: str | Path | None = None, log=print) -> Path:
    """The path of corpus ``name`` in the cache, downloading it first if it is not there.

    ``url`` replaces the public address (for mirrors and tests).  A cached
    file whose sha256 no longer matches is deleted and downloaded again.
    """
    if name not in DOWNLOADS:
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}")
    d = DOWNLOADS[name]
    folder = Path(cache) if cache is not None else cache_dir()
    target = folder / f"{name}.txt"
    if target.exists():
        if sha256_of(target) == d.sha256:
            return target
        log(f"cached {target} is damaged (sha256 mismatch); downloading it again")
        target.unlink()
    url = url or os.environ.get(f"MINILM_{name.upper()}_URL") or d.url
    folder.mkdir(parents=True, exist_ok=True)
    log(f"downloading {name} from {url} to {target}")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != d.sha256:
            raise ValueError(f"download of {name} from {url} is corrupt: sha256 {h.hexdigest()}, "
                             f"expected {d.sha256}; it was deleted")
        publish(tmp)
        os.replace(tmp, target)
    except OSError as e:  # network errors (urllib.error.URLError is an OSError) and disk errors
        raise ValueError(f"could not download {name} from {url}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_text(data: str | None = None, corpus: str | None = None, url: str | None = None, log=print):
    """The training text and a one-line description of where it came from.

    ``data`` (a file) wins over ``corpus``; with neither, the built-in corpus.
    """
    if data is not None:
        return read_text_file(data), f"file {data}"
    name = corpus or BUILTIN
    if name == BUILTIN:
        return builtin_text(), "built-in corpus pydoc (the Python Language Reference topics)"
    path = fetch(name, url=url, log=log)
    text = path.read_text(encoding="utf-8")
    if len(text) != DOWNLOADS[name].n_chars:  # cannot happen when the sha256 matched; a guard all the same
        raise ValueError(f"{path} has {len(text)} characters, expected {DOWNLOADS[name].n_chars}")
    return text, f"corpus {name} ({path})"
