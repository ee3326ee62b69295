"""background-remover: cut the clicked object out of a photo, on a transparent background."""

__version__ = "0.1.0"
