"""Audio tokenizers: one ``[B, T, K]`` contract over every codec of the project."""

from .base import AudioTokenizer  # noqa: F401
