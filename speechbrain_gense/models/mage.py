"""MAGE: the parts of the masked generative enhancer wired together.

:class:`MAGE` holds a frozen :class:`~speechbrain_gense.tokenizers.base.AudioTokenizer`,
the :class:`~speechbrain_gense.models.masked_enhancer.MaskedEnhancer`, an
optional :class:`~speechbrain_gense.models.corrector.Corrector`, an optional
frozen speaker encoder and the token-frequency table of scarcity-aware
masking. It has exactly two entry points, used by the training Brain, the
validation decoding and the pretrained interface alike:

- :meth:`MAGE.forward_train`: masks clean tokens with the one masking module
  (:func:`~speechbrain_gense.masking.sample_training_mask`) and predicts them
  from the masked sequence and the noisy-speech conditioning;
- :meth:`MAGE.enhance`: noisy waveform -> tokens by the one decoding module
  (:func:`~speechbrain_gense.decoding.iterative_decode`) -> waveform, with a
  per-frame confidence.

Conditioning (:meth:`MAGE.condition`): the noisy signal's codec tokens, the
noisy waveform itself (read by the enhancer's band-aware spectrogram
encoder, when it has one) and the speaker embedding of the noisy signal
(when a speaker encoder is given).

Example
-------
>>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
>>> from speechbrain_gense.models.masked_enhancer import MaskedEnhancer, TINY_CONFIG
>>> tok = DebugTokenizer()
>>> mage = MAGE(tok, MaskedEnhancer(tok.vocab_size, **TINY_CONFIG), mask_strategy="random")
>>> noisy, clean = torch.randn(2, 1600), torch.randn(2, 1600)
>>> lens = torch.tensor([1.0, 0.5])
>>> out = mage.forward_train(mage.tokenize(clean, lens)[0], mage.condition(noisy, lens))
>>> out["logits"].shape, out["mask"].shape
(torch.Size([2, 8, 1, 64]), torch.Size([2, 8, 1]))
>>> enhanced = mage.enhance(noisy, lens, steps=2, generator=torch.Generator().manual_seed(0))
>>> enhanced["wav"].shape, enhanced["confidence"].shape
(torch.Size([2, 1600]), torch.Size([2, 8]))
"""

import os

import torch

from ..data.degrade import fit_length_end
from ..decoding import iterative_decode
from ..masking import TokenFrequency, apply_mask, sample_training_mask
from .base import GenerativeEnhancer
from .masked_enhancer import align_frames


class MAGE(GenerativeEnhancer):
    """Tokenizer + masked enhancer (+ corrector, speaker encoder, frequency table).

    One implementation of :class:`~speechbrain_gense.models.base.GenerativeEnhancer`
    (registry name ``"mage"``; folders marked by ``mage.json``). It can
    continue from committed output tokens (``prefix``).

    Arguments
    ---------
    tokenizer : AudioTokenizer
        Frozen codec (single codebook in MAGE); the output tokenizer.
    enhancer : MaskedEnhancer
        The bidirectional token model (``vocab_size`` = the tokenizer's).
    corrector : Corrector, optional
        Flags wrong predictions; used to re-mask at inference.
    speaker_encoder : nn.Module, optional
        Frozen ``(wav[B, S], lens) -> [B, D]``; ``D`` must equal the
        enhancer's ``speaker_dim``.
    token_frequency : TokenFrequency or str, optional
        Frequency table of the training tokens (or a file written by
        :meth:`TokenFrequency.save`): needed by ``"ctf"``.
    mask_strategy : str
        ``"ctf"`` (scarcity-aware coarse-to-fine) or ``"random"`` (MaskGIT).
    mask_noise : float
        Noise added to the rarity when choosing ``"ctf"`` training masks.
    schedule : str
        Masking schedule (training ratios and decoding steps).
    corrector_weight : float
        Weight of the corrector's loss in :meth:`compute_objectives`.
    decode_opts : dict, optional
        This model's defaults of the decoding options (:attr:`decode_defaults`):
        ``steps``, ``temperature``, ``top_k``, ``scarcity_weight``,
        ``remask_ratio``, ``remask_threshold``, ``corrector_steps``,
        ``strategy`` (``None``: ``"ctf"`` with a frequency table, else
        ``"confidence"``), ``corrector`` (``None``: use the corrector when
        there is one; ``True`` without one is an error), ``precision`` (``"fp32"``,
        or ``"bf16"`` / ``"fp16"`` to run the enhancer alone under
        :func:`torch.autocast`, about 2.5x faster on CPUs with AVX512-BF16
        or AMX, or ``"int8"``: the enhancer's linear layers dynamically
        quantised, :meth:`quantized_enhancer`), ``masked_head`` (``True``:
        the output heads run only on the masked positions, the only ones the
        decoding samples, and only their logits are passed on; ``False``: on
        every position, the same tokens) and ``sampler`` (``"gumbel"``:
        Gumbel-max, or ``"cdf"``: inverse-CDF sampling, the same
        distribution with far fewer random numbers and logarithms over the
        8192 codes, other tokens for a given seed;
        :func:`~speechbrain_gense.decoding.sample_logits`).
        Any other name raises ``ValueError``.
    content_encoder : nn.Module or dict, optional
        Frozen content features of the noisy input, ``(wav[B, S], lens) ->
        [B, T', D]`` with a ``dim`` and a ``config()`` (or that config, see
        :func:`build_content_encoder`; e.g. Whisper encoder states), resampled
        to the token frames and given to the enhancer, whose ``content_dim``
        must be ``D``. None (default): no content input.
    """

    method = "mage"
    info_file = "mage.json"
    supports_prefix = True
    decode_defaults = dict(steps=8, temperature=1.0, top_k=None, scarcity_weight=1.0,  # noqa: RUF012
                           remask_ratio=0.1, remask_threshold=None, corrector_steps=None,
                           strategy=None, corrector=None, precision="fp32",
                           masked_head=True, sampler="gumbel")
    #: Values of the ``precision`` decoding option and their autocast types
    #: (``"int8"``: dynamically quantised linear layers, no autocast).
    PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,  # noqa: RUF012
                  "int8": None}

    def __init__(self, tokenizer, enhancer, corrector=None, speaker_encoder=None,
                 token_frequency=None, mask_strategy="ctf", mask_noise=0.3,
                 schedule="cosine", corrector_weight=1.0, decode_opts=None,
                 content_encoder=None):
        super().__init__(decode_opts)
        if enhancer.config["vocab_size"] != tokenizer.vocab_size:
            raise ValueError(f"enhancer vocab_size {enhancer.config['vocab_size']} != "
                             f"tokenizer vocab_size {tokenizer.vocab_size}")
        if mask_strategy not in ("ctf", "random"):
            raise ValueError(f"mask_strategy must be 'ctf' or 'random', got {mask_strategy!r}")
        self.tokenizer = tokenizer
        self.enhancer = enhancer
        self.corrector = corrector
        self.speaker_encoder = speaker_encoder
        content_encoder = build_content_encoder(content_encoder)
        wanted = enhancer.config.get("content_dim")
        have = None if content_encoder is None else int(content_encoder.dim)
        if wanted != have:
            raise ValueError(f"enhancer content_dim {wanted} != content encoder dim {have}")
        self.content_encoder = content_encoder
        if isinstance(token_frequency, (str, bytes)) or hasattr(token_frequency, "__fspath__"):
            token_frequency = TokenFrequency.load(token_frequency)
        self.token_frequency = token_frequency
        self.mask_strategy, self.mask_noise, self.schedule = mask_strategy, mask_noise, schedule
        self.corrector_weight = corrector_weight

    @property
    def output_tokenizer(self):
        """The codec whose tokens MAGE generates (:attr:`tokenizer`)."""
        return self.tokenizer

    def max_frames(self):
        """Longest output in token frames: the enhancer's positions (one goes to the
        speaker embedding when there is one) and the corrector's."""
        limits = []
        if self.enhancer.config.get("max_position"):
            speaker = getattr(self.enhancer, "speaker_proj", None) is not None
            limits.append(int(self.enhancer.config["max_position"]) - int(speaker))
        pos_enc = getattr(self.corrector, "pos_enc", None)
        if getattr(pos_enc, "max_len", None):
            limits.append(int(pos_enc.max_len))
        return min(limits) if limits else None

    def default_strategy(self):
        """Commit order used when ``strategy`` is None: ``"ctf"`` with a frequency
        table, ``"confidence"`` (MaskGIT) without."""
        return "ctf" if self.token_frequency is not None else "confidence"

    # -- conditioning ------------------------------------------------------

    @torch.no_grad()
    def tokenize(self, wav, lens=None):
        """Codec tokens ``([B, T, K], token lens)`` of ``wav[B, S]`` (tokenizer rate)."""
        return self.tokenizer.encode(wav, lens)

    @torch.no_grad()
    def condition(self, noisy_wav, lens=None, noisy_tokens=None):
        """Conditioning of the enhancer from the noisy signal ``[B, S]``.

        Returns
        -------
        dict
            ``noisy_tokens`` ``[B, T, K]``, ``lens`` (token lens), ``noisy_wav``
            (for the band-aware encoder, or None), ``speaker`` ``[B, D]`` or None,
            ``content`` ``[B, T, D]`` (the content encoder's features resampled to
            the token frames) or None.
        """
        if lens is None:
            lens = torch.ones(noisy_wav.shape[0], device=noisy_wav.device)
        if noisy_tokens is None:
            noisy_tokens, tok_lens = self.tokenize(noisy_wav, lens)
        else:
            tok_lens = lens
        speaker = None
        if self.speaker_encoder is not None:
            speaker = self.speaker_encoder(noisy_wav, lens).to(noisy_wav.dtype)
        content = None
        if self.content_encoder is not None:
            content = align_frames(self.content_encoder(noisy_wav, lens).to(noisy_wav.dtype),
                                   noisy_tokens.shape[1])
        band = self.enhancer.config.get("band_encoder") is not None
        use_noisy_tokens = bool(self.enhancer.config.get("noisy_vocab_size", 1) != 0)
        return {"noisy_tokens": noisy_tokens if use_noisy_tokens else None,
                "lens": tok_lens, "noisy_wav": noisy_wav if band else None,
                "speaker": speaker, "content": content, "num_frames": noisy_tokens.shape[1]}

    def predict(self, tokens, cond, logits_mask=None, enhancer=None, packed=False):
        """Enhancer outputs (``logits``, ``hidden``) for ``tokens`` given ``cond``.

        ``logits_mask``: positions whose logits are computed (default all;
        see :meth:`MaskedEnhancer.forward`); ``packed``: return only those,
        as ``masked_logits`` ``[N, V]``; ``enhancer``: another module of
        the same model to run (e.g. :meth:`quantized_enhancer`).
        """
        enhancer = self.enhancer if enhancer is None else enhancer
        return enhancer(tokens, lens=cond["lens"], noisy_tokens=cond["noisy_tokens"],
                        noisy_wav=cond["noisy_wav"], speaker=cond["speaker"],
                        logits_mask=logits_mask, packed=packed, content=cond.get("content"))

    def quantized_enhancer(self):
        """The enhancer with int8 dynamically quantised linear layers (CPU, cached).

        :func:`~speechbrain_gense.models.quantize.cached_int8` of the
        enhancer (every ``nn.Linear``: attention, MLP, conditioning
        projections, heads; embeddings and norms stay float32). Built on the
        first call and kept until the enhancer's weights change
        (``load_state_dict``, training); used by ``precision="int8"``.

        Returns
        -------
        MaskedEnhancer
            The quantised copy, in eval mode.
        """
        from .quantize import cached_int8

        if self.device.type != "cpu":
            raise ValueError(f"precision 'int8' runs on CPU only, the model is on {self.device}")
        return cached_int8(self, "enhancer", self.enhancer)

    # -- training ----------------------------------------------------------

    def forward_train(self, clean_tokens, cond, ratio=None, generator=None):
        """Masks ``clean_tokens[B, T, K]`` and predicts them.

        Returns
        -------
        dict
            ``logits`` ``[B, T, K, V]``, ``hidden``, ``mask`` (True = masked),
            ``ratio`` ``[B]``, ``targets`` (the clean tokens), ``lens`` and,
            with a corrector, ``predicted`` (argmax at masked positions, the
            clean token elsewhere) and ``corrector_logits`` ``[B, T, K]``.
        """
        T = min(clean_tokens.shape[1], cond["num_frames"])
        clean_tokens = clean_tokens[:, :T]
        cond = self._crop(cond, T)
        mask, ratio = sample_training_mask(
            clean_tokens, cond["lens"], strategy=self.mask_strategy, freq=self.token_frequency,
            ratio=ratio, schedule=self.schedule, noise=self.mask_noise, generator=generator)
        out = self.predict(apply_mask(clean_tokens, mask, self.enhancer.mask_id), cond)
        out.update(mask=mask, ratio=ratio, targets=clean_tokens, lens=cond["lens"])
        if self.corrector is not None:
            predicted = torch.where(mask, out["logits"].detach().argmax(-1), clean_tokens)
            out["predicted"] = predicted
            out["corrector_logits"] = self.corrector(out["hidden"].detach(), predicted,
                                                     cond["lens"])
        return out

    def losses(self, out, corrector_weight=1.0):
        """Masked-token cross-entropy (+ ``corrector_weight`` x corrector BCE).

        Returns
        -------
        dict
            ``loss`` (total), ``ce``, ``acc`` (masked-token accuracy) and,
            with a corrector, ``corrector_loss`` and ``corrector_acc``.
        """
        ce = self.enhancer.loss(out["logits"], out["targets"], out["mask"])
        res = {"loss": ce["loss"], "ce": ce["loss"].detach(), "acc": ce["acc"]}
        if "corrector_logits" in out:
            c = self.corrector.loss(out["corrector_logits"], out["predicted"], out["targets"],
                                    out["mask"])
            res["loss"] = res["loss"] + corrector_weight * c["loss"]
            res["corrector_loss"] = c["loss"].detach()
            res["corrector_acc"] = c["acc"]
        return res

    def compute_objectives(self, batch, stage=None):
        """The training objective of a batch (what the generic Brain runs).

        ``batch`` has ``noisy_sig`` and either ``clean_tokens`` (from the
        token cache) or ``clean_sig`` (tokenized here). The clean tokens are
        masked and predicted from the noisy conditioning
        (:meth:`forward_train`); the result is :meth:`losses` (``loss``,
        ``ce``, ``acc`` and the corrector's).

        Example
        -------
        >>> from speechbrain.dataio.batch import PaddedBatch
        >>> from speechbrain_gense.models.debug import tiny_mage
        >>> batch = PaddedBatch([{"clean_sig": torch.randn(1600), "noisy_sig": torch.randn(1600)},
        ...                      {"clean_sig": torch.randn(800), "noisy_sig": torch.randn(800)}])
        >>> sorted(tiny_mage().compute_objectives(batch))
        ['acc', 'ce', 'corrector_acc', 'corrector_loss', 'loss']
        """
        noisy, lens = batch.noisy_sig
        cond = self.condition(noisy, lens)
        if "clean_tokens" in batch:
            clean_tokens = batch.clean_tokens.data
        else:
            clean_tokens = self.tokenize(batch.clean_sig.data, batch.clean_sig.lengths)[0]
        return self.losses(self.forward_train(clean_tokens, cond), self.corrector_weight)

    # -- inference ---------------------------------------------------------

    @torch.no_grad()
    def generate(self, cond, generator=None, prefix=None, **opts):
        """Clean tokens for ``cond`` by iterative masked decoding.

        ``prefix`` ``[B, P, K]``: output tokens given as committed (they never
        change); ``opts``: decoding options (:attr:`decode_defaults`).

        Returns
        -------
        dict
            The output of :func:`~speechbrain_gense.decoding.iterative_decode`.
        """
        o = self.decode_options(**opts)
        strategy = o["strategy"] or self.default_strategy()
        if o["corrector"] and self.corrector is None:
            raise ValueError("corrector=True: the model has no corrector")
        corrector_fn = None
        if o["corrector"] is not False and self.corrector is not None:
            def corrector_fn(hidden, tokens):
                return self.corrector.confidence(hidden, tokens, cond["lens"])
        precision = o["precision"] or "fp32"
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(self.PRECISIONS)}, "
                             f"got {precision!r}")
        dtype = self.PRECISIONS[precision]
        enhancer = self.quantized_enhancer() if precision == "int8" else None
        mask_id = self.enhancer.mask_id

        def predict(tokens):
            # the decoding samples the masked positions only: heads there only
            where = (tokens == mask_id) if o["masked_head"] else None
            packed = where is not None
            if dtype is None:
                return self.predict(tokens, cond, where, enhancer, packed)
            with torch.autocast(device_type=self.device.type, dtype=dtype):
                out = self.predict(tokens, cond, where, enhancer, packed)
            return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                    for k, v in out.items()}

        noisy = cond["noisy_tokens"]
        B, T = noisy.shape[0] if noisy is not None else cond["lens"].shape[0], cond["num_frames"]
        shape = (B, T, self.enhancer.config["num_codebooks"])
        init_tokens = init_mask = None
        prefix = self.check_prefix(prefix, B)
        if prefix is not None:  # committed tokens first, the rest to generate
            n = min(prefix.shape[1], T)
            init_tokens = torch.zeros(shape, dtype=torch.long, device=cond["lens"].device)
            init_tokens[:, :n] = prefix[:, :n].to(init_tokens.device)
            init_mask = torch.ones(B, T, dtype=torch.bool, device=init_tokens.device)
            init_mask[:, :n] = False
        return iterative_decode(
            predict, shape, cond["lens"],
            self.enhancer.mask_id, steps=o["steps"], schedule=self.schedule,
            strategy=strategy, freq=self.token_frequency, scarcity_weight=o["scarcity_weight"],
            temperature=o["temperature"], top_k=o["top_k"], generator=generator,
            init_tokens=init_tokens, init_mask=init_mask, corrector_fn=corrector_fn,
            remask_ratio=o["remask_ratio"] if corrector_fn else None,
            remask_threshold=o["remask_threshold"] if corrector_fn else None,
            corrector_steps=o["corrector_steps"], sampler=o["sampler"] or "gumbel")

    @torch.no_grad()
    def enhance(self, wav, lens=None, generator=None, prefix=None, **opts):
        """Enhances ``wav[B, S]`` (tokenizer rate): the whole chain.

        Arguments
        ---------
        wav : torch.Tensor
            ``[B, S]`` noisy speech at :attr:`sample_rate`.
        lens : torch.Tensor, optional
            ``[B]`` relative lengths.
        generator : torch.Generator, optional
            Random number generator of the sampling.
        prefix : torch.LongTensor, optional
            ``[B, P, K]`` output tokens the output starts with (committed).
        **opts
            Decoding options (:attr:`decode_defaults`; others raise).

        Returns
        -------
        dict
            ``wav`` ``[B, S]`` (same length as the input), ``tokens``
            ``[B, T, K]``, ``confidence`` ``[B, T]`` (per frame), ``lens``
            (token lens), ``nfe`` (enhancer calls, corrector pass included).
        """
        opts = self.decode_options(**opts)
        cond = self.condition(wav, lens)
        out = self.generate(cond, generator=generator, prefix=prefix, **opts)
        out_wav = self.tokenizer.decode(out["tokens"], cond["lens"])
        out_wav = fit_length_end(out_wav, wav.shape[-1])
        return {"wav": out_wav, "tokens": out["tokens"], "confidence": out["confidence"],
                "lens": cond["lens"], "nfe": int(out["steps"])}

    # -- persistence -------------------------------------------------------

    def save(self, folder, dtype=None, tokenizer_spec=None):
        """Writes the trained parts to ``folder`` (read back by :meth:`load`).

        Files: ``enhancer.ckpt``, ``corrector.ckpt`` (if any),
        ``token_frequency.pt`` (if any) and ``mage.json`` (method, tokenizer
        spec, speaker encoder, masking and decoding settings). A local path in
        the tokenizer spec is stored relative to ``folder``, so a model folder
        and its codec can move together.

        Arguments
        ---------
        folder : str
            Output folder (created).
        dtype : torch.dtype or str, optional
            Store the enhancer's and corrector's weights in this type (e.g.
            ``"float16"`` halves the files; :meth:`load` gives float32 back).
        tokenizer_spec : str, optional
            Spec of the tokenizer (default: ``tokenizer.spec`` when the
            tokenizer came from :func:`~speechbrain_gense.tokenizers.registry.load_tokenizer`).

        Returns
        -------
        str
            ``folder``.
        """
        return super().save(folder, dtype=dtype, tokenizer_spec=tokenizer_spec)

    def save_parts(self, folder, dtype=None, tokenizer_spec=None):
        """Writes the checkpoints; returns the content of ``mage.json``."""
        from ..tokenizers.registry import relative_spec

        spec = tokenizer_spec or getattr(self.tokenizer, "spec", None)
        if spec is None:
            raise ValueError("MAGE.save needs the tokenizer spec (tokenizer_spec=...)")
        spec = relative_spec(spec, folder)
        self.enhancer.save(os.path.join(folder, "enhancer.ckpt"), dtype=dtype)
        if self.corrector is not None:
            self.corrector.save(os.path.join(folder, "corrector.ckpt"), dtype=dtype)
        if self.token_frequency is not None:
            self.token_frequency.save(os.path.join(folder, "token_frequency.pt"))
        speaker = None
        if self.speaker_encoder is not None:
            speaker = getattr(self.speaker_encoder, "spec", None) or {"kind": "resemblyzer"}
        content = None if self.content_encoder is None else self.content_encoder.config()
        return {"tokenizer_spec": spec, "speaker_encoder": speaker, "content_encoder": content,
                "mask_strategy": self.mask_strategy, "mask_noise": self.mask_noise,
                "schedule": self.schedule, "corrector_weight": self.corrector_weight,
                "decode_opts": self.decode_opts}

    @classmethod
    def load(cls, folder, device="cpu", tokenizer=None):
        """Builds a MAGE from a folder written by :meth:`save` (eval mode).

        Arguments
        ---------
        folder : str
            The model folder.
        device : str
            Device of the loaded weights.
        tokenizer : AudioTokenizer, optional
            Use this tokenizer instead of the stored spec (whose relative
            path is resolved against ``folder``).
        """
        return super().load(folder, device=device, tokenizer=tokenizer)

    @classmethod
    def load_parts(cls, folder, info, device="cpu", tokenizer=None):
        """Builds the model from ``folder`` and its ``mage.json`` content."""
        from ..tokenizers.registry import absolute_spec, load_tokenizer
        from .corrector import Corrector
        from .masked_enhancer import MaskedEnhancer
        from .speaker import build_speaker_encoder

        if tokenizer is None:
            tokenizer = load_tokenizer(absolute_spec(info["tokenizer_spec"], folder),
                                       device=device)
        enhancer = MaskedEnhancer.load(os.path.join(folder, "enhancer.ckpt"), device)
        corr_path = os.path.join(folder, "corrector.ckpt")
        corrector = Corrector.load(corr_path, device) if os.path.isfile(corr_path) else None
        freq_path = os.path.join(folder, "token_frequency.pt")
        freq = TokenFrequency.load(freq_path) if os.path.isfile(freq_path) else None
        speaker = None
        if info.get("speaker_encoder"):
            sp = dict(info["speaker_encoder"])
            speaker = build_speaker_encoder(sp.pop("kind"), **sp)
        return cls(tokenizer, enhancer, corrector=corrector, speaker_encoder=speaker,
                   token_frequency=freq, mask_strategy=info.get("mask_strategy", "ctf"),
                   mask_noise=info.get("mask_noise", 0.3),
                   schedule=info.get("schedule", "cosine"),
                   corrector_weight=info.get("corrector_weight", 1.0),
                   decode_opts=info.get("decode_opts"),
                   content_encoder=info.get("content_encoder"))

    @staticmethod
    def _crop(cond, T):
        if cond["num_frames"] == T:
            return cond
        cond = dict(cond, num_frames=T)
        for key in ("noisy_tokens", "content"):
            if cond.get(key) is not None:
                cond[key] = cond[key][:, :T]
        return cond


def build_content_encoder(config=None):
    """The content features of a MAGE (or None): a feature module, or its config.

    ``config`` is what :func:`~speechbrain_gense.tokenizers.semantic.build_features`
    takes (e.g. ``{"name": "whisper", "layer": 4}``: the frozen Whisper
    tiny.en encoder of the noisy input, 50 Hz, 384 values per frame); MAGE
    stores it in ``mage.json`` and rebuilds the module on load (the weights
    are the packaged Whisper's, not the model folder's).

    Example
    -------
    >>> build_content_encoder(None) is None and build_content_encoder({}) is None  # {}: YAML's off
    True
    >>> build_content_encoder({"name": "spectral", "kind": "fbank", "n_mels": 40}).dim
    40
    """
    if not config:
        return None
    if isinstance(config, torch.nn.Module):
        return config
    from ..tokenizers.semantic import build_features

    encoder = build_features(dict(config))
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.eval()


__all__ = ["MAGE", "build_content_encoder"]
