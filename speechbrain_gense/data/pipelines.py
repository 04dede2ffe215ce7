"""SpeechBrain data pipelines: clean and degraded signals as dynamic items.

Training manifests are clean-only; the noisy signal is made on the fly by a
:class:`~speechbrain_gense.data.degrade.Degrader` built in YAML, e.g.::

    degrader: !new:speechbrain_gense.data.degrade.Degrader
        noise_files: !ref <data_folder>/noise_train.json
        rir_files: !ref <data_folder>/rir_train.json
        noise_prob: 0.8
        snr_low: -5.
        snr_high: 20.
        rir_prob: 0.5

Valid and test manifests carry fixed mixtures (``noisy_wav``), read as they are.
"""

import os

import speechbrain as sb
import torch  # noqa: F401 (doctests)
from speechbrain.dataio.dataset import DynamicItemDataset

from ..audio import load_audio


def audio_pipeline(degrader=None, sample_rate=16000):
    """A dynamic item giving ``clean_sig`` and ``noisy_sig``.

    With a ``degrader`` the noisy signal is drawn anew at every access (the
    DataLoader seeds each worker's torch RNG, so workers differ); otherwise
    the entry's ``noisy_wav`` is read, or the clean signal is used when the
    entry has none.

    Arguments
    ---------
    degrader : Degrader, optional
        On-the-fly degradation.
    sample_rate : int
        Expected rate of the files (others are resampled).

    Example
    -------
    >>> from speechbrain_gense.data.degrade import Degrader
    >>> d = Degrader(noise_signals=[torch.randn(800)], noise_prob=1.0, rir_prob=0.0)
    >>> pipe = audio_pipeline(d)
    >>> pipe.provides
    ('clean_sig', 'noisy_sig')
    """

    def _read(path):
        return load_audio(path, sample_rate, channels="mix", resample=True)[0]

    if degrader is not None:
        @sb.utils.data_pipeline.takes("clean_wav")
        @sb.utils.data_pipeline.provides("clean_sig", "noisy_sig")
        def pipeline(clean_wav):
            clean = _read(clean_wav)
            noisy, info = degrader(clean)
            # The degrader scales a mixture down when it would clip; keep
            # the pair level-matched.
            yield clean * info.get("gain", 1.0)
            yield noisy
    else:
        @sb.utils.data_pipeline.takes("clean_wav", "noisy_wav")
        @sb.utils.data_pipeline.provides("clean_sig", "noisy_sig")
        def pipeline(clean_wav, noisy_wav):
            clean = _read(clean_wav)
            yield clean
            yield _read(noisy_wav) if noisy_wav else clean
    return pipeline


def token_crop_pipeline(cache, degrader=None, segment_frames=None, sample_rate=16000):
    """Clean tokens from a token cache, with the matching audio crop (training).

    Gives ``clean_tokens`` ``[T, K]`` (read from ``cache``, encoded once per
    utterance), ``clean_sig`` and ``noisy_sig``. With ``segment_frames``, a
    random window of that many token frames is cut from longer utterances and
    the audio cut at the same place (frame ``f`` starts at sample
    ``f * hop_length`` of the tokenizer), so tokens and audio stay aligned.
    The noisy signal is made from the crop by ``degrader`` (or is the clean
    crop without one); the clean crop is scaled by the degrader's anti-clipping
    gain, as in :func:`audio_pipeline`. Tokens come from the unscaled file.

    Arguments
    ---------
    cache : TokenCache
        Token cache of the (frozen) tokenizer.
    degrader : Degrader, optional
        On-the-fly degradation.
    segment_frames : int, optional
        Crop length in token frames (None: whole utterances).
    sample_rate : int
        Rate of the signals (must be the tokenizer's).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.tokenizers.cache import TokenCache
    >>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
    >>> pipe = token_crop_pipeline(TokenCache(tempfile.mkdtemp(), DebugTokenizer()))
    >>> pipe.provides
    ('clean_tokens', 'clean_sig', 'noisy_sig')
    """
    hop = cache.tokenizer.hop_length
    if segment_frames is not None and not isinstance(hop, int):
        raise ValueError("segment_frames needs a tokenizer with an integer hop length")
    if cache.tokenizer.sample_rate != sample_rate:
        raise ValueError(f"token_crop_pipeline: sample_rate {sample_rate} differs from the "
                         f"tokenizer's {cache.tokenizer.sample_rate}")

    @sb.utils.data_pipeline.takes("id", "clean_wav")
    @sb.utils.data_pipeline.provides("clean_tokens", "clean_sig", "noisy_sig")
    def pipeline(uid, clean_wav):
        clean = load_audio(clean_wav, sample_rate, channels="mix", resample=True)[0]
        tokens = cache.get(uid, clean_wav)
        if segment_frames is not None and tokens.shape[0] > segment_frames:
            start = int(torch.randint(0, tokens.shape[0] - segment_frames + 1, ()))
            tokens = tokens[start:start + segment_frames]
            clean = clean[start * hop:(start + segment_frames) * hop]
        gain = 1.0
        noisy = clean
        if degrader is not None:
            noisy, info = degrader(clean)
            gain = info.get("gain", 1.0)
        yield tokens
        yield clean * gain
        yield noisy

    return pipeline


def build_dataset(manifest, degrader=None, data_root=None, sample_rate=16000,
                  output_keys=("id", "clean_sig", "noisy_sig")):
    """A ``DynamicItemDataset`` over a manifest with the audio pipeline attached.

    Arguments
    ---------
    manifest : str
        SpeechBrain JSON manifest.
    degrader : Degrader, optional
        On-the-fly degradation (training); None reads ``noisy_wav``.
    data_root : str, optional
        Replaces ``{data_root}`` (default: the manifest's folder).
    sample_rate : int
        Audio rate.
    output_keys : tuple
        Keys returned per item (manifest fields such as ``words`` allowed).

    Returns
    -------
    DynamicItemDataset
    """
    if data_root is None:
        data_root = os.path.dirname(os.path.abspath(manifest))
    dataset = DynamicItemDataset.from_json(manifest, replacements={"data_root": data_root})
    if degrader is None:
        # Entries without a fixed mixture fall back to the clean signal.
        for entry in dataset.data.values():
            entry.setdefault("noisy_wav", "")
        dataset.pipeline.add_static_keys(["noisy_wav"])
    dataset.add_dynamic_item(audio_pipeline(degrader, sample_rate))
    dataset.set_output_keys(list(output_keys))
    return dataset


def collate(batch):
    """Pads a list of items into a ``PaddedBatch`` (clean_sig, noisy_sig: ``[B, S]``).

    Example
    -------
    >>> b = collate([{"id": "a", "clean_sig": torch.ones(3), "noisy_sig": torch.ones(3)},
    ...              {"id": "b", "clean_sig": torch.ones(2), "noisy_sig": torch.ones(2)}])
    >>> b.clean_sig.data.shape, b.clean_sig.lengths.tolist()
    (torch.Size([2, 3]), [1.0, 0.6666666865348816])
    """
    return sb.dataio.batch.PaddedBatch(batch)
