"""Input side of preprocessing: manifest/folder rows and URL fetching."""

from preprocessing.sources.rows import InputRow, load_rows, make_key

__all__ = ["InputRow", "load_rows", "make_key"]
