"""TokenModelBrain: one Brain for every token model whose objective is its own.

The Brain does not know how a model is trained: ``compute_forward`` calls
``hparams.model.compute_objectives(batch, stage)``, which returns a dict with
``loss`` (a scalar tensor) and any statistics (``acc``, per-stage losses...);
``compute_objectives`` accumulates them and returns ``loss``. Masked
(MAGE-style) and autoregressive (GenSE N2S / S2S) objectives are thereby the
models', and the Brain only runs them, logs them, checkpoints and, at the end
of each validation epoch, enhances a few utterances with the model's own
``enhance`` (the inference path) and scores them (DNSMOS OVRL, PESQ-WB).

Expected ``hparams``: ``model`` (a module with ``compute_objectives`` and,
for the validation decoding, ``enhance`` and ``sample_rate``),
``epoch_counter``; optional ``valid_decode_utterances`` (default 0),
``valid_decode_opts`` (keyword arguments of ``enhance``), ``train_logger``,
``lr_annealing`` (called with the validation loss), ``keep_checkpoints``,
``seed``. ``modules`` holds the trainable parts (e.g. ``n2s`` and ``s2s``).

Example
-------
>>> from speechbrain.dataio.batch import PaddedBatch
>>> class Toy(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.w = torch.nn.Parameter(torch.ones(1))
...     def compute_objectives(self, batch, stage):
...         loss = (self.w * batch.noisy_sig.data).pow(2).mean()
...         return {"loss": loss, "w": self.w.detach()}
>>> toy = Toy()
>>> brain = TokenModelBrain(modules={"toy": toy}, opt_class=lambda p: torch.optim.SGD(p, 0.1),
...                         hparams={"model": toy}, run_opts={"device": "cpu"})
>>> brain.init_optimizers()
>>> batch = PaddedBatch([{"noisy_sig": torch.ones(4)}, {"noisy_sig": torch.ones(2)}])
>>> loss = brain.fit_batch(batch)
>>> round(float(loss), 3), sorted(brain.last_stats)
(0.75, ['loss', 'w'])
"""

import logging
import math

import speechbrain as sb
import torch

logger = logging.getLogger(__name__)


class TokenModelBrain(sb.Brain):
    """Runs ``hparams.model.compute_objectives``; see the module docstring."""

    def __init__(self, *args, **kwargs):
        checkpointer = kwargs.get("checkpointer")
        if checkpointer is not None:  # a part switched off in the YAML (e.g. ``--n2s null``)
            for name in [k for k, v in checkpointer.recoverables.items() if v is None]:
                del checkpointer.recoverables[name]
        super().__init__(*args, **kwargs)
        self.model = self.hparams.model
        self._reset()
        self.last_stats, self.train_stats = {}, {}

    def _reset(self):
        self._sums, self._count, self._decoded = {}, 0, []

    def compute_forward(self, batch, stage):
        """The model's objective dict for ``batch`` (the model reads what it needs)."""
        batch = batch.to(self.device)
        # frozen parts (tokenizers) are not in self.modules: move the whole model
        self.model.to(self.device)
        return self.model.compute_objectives(batch, stage)

    def compute_objectives(self, predictions, batch, stage):
        """Accumulates the statistics of ``predictions`` and returns its ``loss``."""
        values = {k: float(v.detach()) if torch.is_tensor(v) else float(v)
                  for k, v in predictions.items() if torch.is_tensor(v) or
                  isinstance(v, (int, float))}
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1
        self.last_stats = values
        if stage != sb.Stage.TRAIN:
            self._decode_some(batch)
        return predictions["loss"]

    def optimizers_step(self):
        """Averages the gradients over DDP ranks, then steps.

        The model's objective calls its own submodules, not the DDP wrappers
        of ``self.modules``, so DDP's own gradient hooks never fire; the
        average is taken here instead (a no-op change for gradients that are
        already equal).
        """
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            for p in self.modules.parameters():
                if not p.requires_grad:
                    continue
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= world
        super().optimizers_step()

    @torch.no_grad()
    def _decode_some(self, batch):
        """Enhances up to ``valid_decode_utterances`` utterances and scores them."""
        n = getattr(self.hparams, "valid_decode_utterances", 0) or 0
        if len(self._decoded) >= n:
            return
        from speechbrain_gense.metrics.dnsmos import dnsmos
        from speechbrain_gense.metrics.intrusive import pesq_wb

        noisy, lens = batch.noisy_sig
        clean = batch.clean_sig.data
        limit = self.model.max_frames() if hasattr(self.model, "max_frames") else None
        if limit and noisy.shape[-1] > limit * self.model.hop_length:  # the first chunk only
            keep = limit * self.model.hop_length
            lens = torch.clamp(torch.round(lens * noisy.shape[-1]), max=keep) / keep
            noisy, clean = noisy[..., :keep], clean[..., :keep]
        opts = getattr(self.hparams, "valid_decode_opts", None) or {}
        gen = torch.Generator(device=self.device).manual_seed(
            getattr(self.hparams, "seed", 0) + len(self._decoded))
        out = self.model.enhance(noisy, lens, generator=gen, **opts)
        sizes = torch.round(lens * noisy.shape[-1]).long()
        sr = self.model.sample_rate
        for est, ref, size in zip(out["wav"], clean, sizes):
            if len(self._decoded) >= n:
                break
            est, ref = est[:size].float().cpu(), ref[:size].cpu()
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
                    meta={"loss": stats["loss"]}, min_keys=["loss"],
                    num_to_keep=getattr(self.hparams, "keep_checkpoints", 2))
        elif log is not None:
            log.log_stats({"Epoch loaded": self.hparams.epoch_counter.current},
                          test_stats=stats)


__all__ = ["TokenModelBrain"]
