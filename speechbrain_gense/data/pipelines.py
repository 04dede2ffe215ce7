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
