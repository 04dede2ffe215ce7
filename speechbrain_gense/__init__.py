"""speechbrain-gense: generative speech enhancement over discrete audio tokens.

A SpeechBrain plugin. Subpackages:

- ``speechbrain_gense.data``: the embedded TTS corpus, degradations, manifests.
- ``speechbrain_gense.metrics``: DNSMOS, PESQ, ESTOI, SI-SDR, SECS, WER, MCD
  as SpeechBrain ``MetricStats`` and the ``gense-eval`` command.
- ``speechbrain_gense.baselines``: noisy / clean / RNNoise / spectral gating.
"""

from .version import __version__  # noqa: F401
