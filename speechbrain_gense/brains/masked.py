"""MaskedEnhancerBrain: trains MAGE (masked enhancer + corrector) on codec tokens.

The Brain only moves batches through :class:`~speechbrain_gense.models.mage.MAGE`:
``compute_forward`` takes the clean tokens (from the token cache when the
batch has ``clean_tokens``, else encoded on the fly) and the noisy signal
(degraded on the fly in training), and calls :meth:`MAGE.forward_train`;
``compute_objectives`` returns :meth:`MAGE.losses`. At the end of each
validation epoch a few utterances are enhanced with :meth:`MAGE.enhance` (the
inference path) and scored with DNSMOS OVRL and PESQ-WB.

Expected ``hparams``: ``mage`` (the MAGE module), ``epoch_counter``,
``opt_class``, ``corrector_weight``, ``valid_decode_utterances``,
``valid_decode_opts`` (keyword arguments of :meth:`MAGE.enhance`),
optional ``train_logger``, ``lr_annealing`` (called with the validation loss),
``keep_checkpoints``, ``seed``. Module keys: ``enhancer`` (and ``corrector``).

Example
-------
>>> from speechbrain.dataio.batch import PaddedBatch
>>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
>>> from speechbrain_gense.models.masked_enhancer import MaskedEnhancer, TINY_CONFIG
>>> from speechbrain_gense.models.mage import MAGE
>>> tok = DebugTokenizer()
>>> mage = MAGE(tok, MaskedEnhancer(tok.vocab_size, **TINY_CONFIG), mask_strategy="random")
>>> brain = MaskedEnhancerBrain(
...     modules={"enhancer": mage.enhancer},
...     opt_class=lambda p: torch.optim.Adam(p, 1e-3),
...     hparams={"mage": mage, "valid_decode_utterances": 0}, run_opts={"device": "cpu"})
>>> batch = PaddedBatch([{"clean_sig": torch.randn(1600), "noisy_sig": torch.randn(1600)},
...                      {"clean_sig": torch.randn(800), "noisy_sig": torch.randn(800)}])
>>> brain.init_optimizers()
>>> loss = brain.fit_batch(batch)
>>> loss.dim(), 0.0 <= brain.last_stats["acc"] <= 1.0
(0, True)
"""

import logging
import math

import speechbrain as sb
import torch

from speechbrain_gense.metrics.dnsmos import dnsmos
from speechbrain_gense.metrics.intrusive import pesq_wb

logger = logging.getLogger(__name__)


class MaskedEnhancerBrain(sb.Brain):
    """Trains :class:`~speechbrain_gense.models.mage.MAGE`; see the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mage = self.hparams.mage
        self._reset()
        self.last_stats, self.train_stats = {}, {}

    def _reset(self):
        self._sums, self._count, self._decoded = {}, 0, []

    def compute_forward(self, batch, stage):
        """Masks the clean tokens and predicts them from the noisy conditioning."""
        batch = batch.to(self.device)
        noisy, lens = batch.noisy_sig
        # The tokenizer and the speaker encoder are frozen and not in self.modules.
        self.mage.tokenizer.to(self.device)
        if self.mage.speaker_encoder is not None:
            self.mage.speaker_encoder.to(self.device)
        cond = self.mage.condition(noisy, lens)
        if "clean_tokens" in batch:
            clean_tokens = batch.clean_tokens.data
        else:
            clean_tokens = self.mage.tokenize(batch.clean_sig.data, batch.clean_sig.lengths)[0]
        return self.mage.forward_train(clean_tokens, cond)

    def compute_objectives(self, predictions, batch, stage):
        """Masked-token cross-entropy (+ corrector BCE); accumulates the stats."""
        losses = self.mage.losses(predictions,
                                  corrector_weight=getattr(self.hparams, "corrector_weight", 1.0))
        values = {k: float(v.detach()) if torch.is_tensor(v) else float(v)
                  for k, v in losses.items()}
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1
        self.last_stats = values
        if stage != sb.Stage.TRAIN:
            self._decode_some(batch)
        return losses["loss"]

    @torch.no_grad()
    def _decode_some(self, batch):
        """Enhances up to ``valid_decode_utterances`` utterances and scores them."""
        n = getattr(self.hparams, "valid_decode_utterances", 0) or 0
        if len(self._decoded) >= n:
            return
        noisy, lens = batch.noisy_sig
        clean = batch.clean_sig.data
        opts = getattr(self.hparams, "valid_decode_opts", None) or {}
        gen = torch.Generator(device=self.device).manual_seed(
            getattr(self.hparams, "seed", 0) + len(self._decoded))
        out = self.mage.enhance(noisy, lens, generator=gen, **opts)
        sizes = torch.round(lens * noisy.shape[-1]).long()
        sr = self.mage.tokenizer.sample_rate
        for est, ref, size in zip(out["wav"], clean, sizes):
            if len(self._decoded) >= n:
                break
            est, ref = est[:size].cpu(), ref[:size].cpu()
            scores = {"pesq": pesq_wb(est, ref) if sr == 16000 else math.nan}
            scores["ovrl"] = dnsmos(est)["ovrl"] if sr == 16000 else math.nan
            self._decoded.append(scores)

    def on_stage_start(self, stage, epoch=None):
        self._reset()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": stage_loss}
        stats.update({k: v / max(self._count, 1) for k, v in self._sums.items() if k != "loss"})
        for key in ("pesq", "ovrl"):
            vals = [d[key] for d in self._decoded if not math.isnan(d[key])]
            if vals:
                stats[key] = sum(vals) / len(vals)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        self.last_stats = stats
        log = getattr(self.hparams, "train_logger", None)
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            sched = getattr(self.hparams, "lr_annealing", None)
            if sched is not None:
                _, new_lr = sched(stage_loss)  # NewBob-style: (old, new)
                sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            if log is not None:
                log.log_stats({"epoch": epoch, "lr": lr}, train_stats=self.train_stats,
                              valid_stats=stats)
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"loss": stats["loss"], "acc": stats.get("acc", 0.0)},
                    min_keys=["loss"], num_to_keep=getattr(self.hparams, "keep_checkpoints", 2))
        elif log is not None:
            log.log_stats({"Epoch loaded": self.hparams.epoch_counter.current},
                          test_stats=stats)


__all__ = ["MaskedEnhancerBrain"]
