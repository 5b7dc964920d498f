"""A built-in 5×7 bitmap font for the digits 0–9 and the capital letters A–Z.

Each glyph is seven rows of five pixels, written as strings of ``#`` (ink) and ``.`` (paper), so the font is
readable in the source and needs no font file.
"""

from __future__ import annotations

import numpy as np

GLYPH_HEIGHT = 7
GLYPH_WIDTH = 5

_GLYPH_ROWS: dict[str, str] = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "####. ....# ....# .###. ....# ....# ####.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": ".###. #.... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ....# .###.",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
}

CHARACTERS: tuple[str, ...] = tuple(_GLYPH_ROWS)


def glyph(character: str) -> np.ndarray:
    """Return the bitmap of ``character`` as a bool array of shape ``[7, 5]``."""
    try:
        rows = _GLYPH_ROWS[character]
    except KeyError:
        raise ValueError(f"no glyph for {character!r}; the font covers {''.join(CHARACTERS)}") from None
    return np.array([[pixel == "#" for pixel in row] for row in rows.split()], dtype=bool)


def render_text(text: str, scale: int = 1, spacing: int = 1) -> np.ndarray:
    """Render ``text`` left to right into a bool mask of shape ``[7 * scale, width]``."""
    glyphs = [np.kron(glyph(character), np.ones((scale, scale), dtype=bool)) for character in text]
    gap = np.zeros((GLYPH_HEIGHT * scale, spacing * scale), dtype=bool)
    pieces: list[np.ndarray] = []
    for index, bitmap in enumerate(glyphs):
        if index:
            pieces.append(gap)
        pieces.append(bitmap)
    return np.concatenate(pieces, axis=1)
