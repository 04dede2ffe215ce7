"""Audio tokenizers: one ``[B, T, K]`` contract over every codec of the project.

- :class:`~.base.AudioTokenizer`: the contract (``encode``/``decode``).
- :mod:`.debug`: a tiny random tokenizer for tests of everything downstream.
- :mod:`.dac`, :mod:`.bigcodec`: adapters loading local checkpoints.
- :mod:`.simcodec`: the project's single-codebook codec (GenSE's SimCodec).
- :mod:`.semantic`: SSL / MFCC features + k-means (semantic tokens).
- :mod:`.cache`: tokens extracted once per dataset, per tokenizer fingerprint.
"""

from .base import AudioTokenizer  # noqa: F401
from .debug import DebugTokenizer  # noqa: F401
