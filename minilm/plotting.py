"""Figures for the notebooks: a font that draws Chinese.

The notebooks label some figures in Chinese (the translation notebook's cross-attention rows, 三千零...).
matplotlib's default font has no CJK glyphs; without one it draws empty boxes and warns once per missing glyph.
``use_cjk_font`` picks, in order:

1. Noto Sans CJK SC from the optional ``mplfonts`` package (``pip install -e '.[figures]'``), which is what the
   committed figures are drawn with;
2. any CJK font already installed on the system;
3. nothing: it returns None, and a notebook then writes the Chinese in pinyin instead, so no glyph is missing and
   no warning is printed.

It reads the font file straight from the package's folder (``importlib.util.find_spec``), without importing
``mplfonts`` itself, so nothing else in matplotlib's configuration changes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MPLFONTS_FILE = "NotoSansCJKsc-Regular.otf"
SYSTEM_HINTS = ("CJK", "WenQuanYi", "Heiti", "SimHei", "Source Han", "Noto Sans SC", "PingFang", "Ming", "Kai")


def mplfonts_path() -> Path | None:
    """The Noto Sans CJK SC file shipped by ``mplfonts``, or None when the package (or the file) is absent."""
    spec = importlib.util.find_spec("mplfonts")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / MPLFONTS_FILE
    return path if path.is_file() else None


def use_cjk_font() -> str | None:
    """Put a CJK font first in matplotlib's sans-serif list; return its family name, or None if there is none."""
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    name = None
    path = mplfonts_path()
    if path is not None:
        font_manager.fontManager.addfont(str(path))
        name = font_manager.FontProperties(fname=str(path)).get_name()
    else:
        found = [f.name for f in font_manager.fontManager.ttflist if any(h in f.name for h in SYSTEM_HINTS)]
        name = sorted(found)[0] if found else None
    if name is not None:
        plt.rcParams["font.sans-serif"] = [name, *plt.rcParams["font.sans-serif"]]
    return name
