"""Data: the embedded TTS corpus, degradations, manifests and pipelines."""
