"""CodecBrain: trains a codec (SimCodec, RVQCodec) with reconstruction, commitment and GAN losses.

The Brain only wires the parts together: the codec's ``forward`` (see
:class:`~speechbrain_gense.models.simcodec.SimCodec`), the generator loss
(:class:`~speechbrain_gense.models.codec_losses.CodecGeneratorLoss`: multi-scale
mel, commitment, LSGAN + feature matching) and, once the adversarial phase has
started, a discriminator step (SpeechBrain's HiFi-GAN discriminators and LSGAN
loss) before each generator step, as SpeechBrain's HiFi-GAN recipe does.

Expected ``hparams`` (all set in the recipe YAML):

- ``generator_loss``, ``discriminator_loss``: loss modules;
- ``opt_class_generator``, ``opt_class_discriminator``: optimizer factories;
- ``adversarial_start_epoch``: first epoch with the GAN terms (epochs before
  train with reconstruction + commitment only: much faster on a CPU);
- ``valid_pesq_utterances``: how many validation utterances get PESQ-WB;
- ``train_logger``; optional ``lr_annealing_generator`` (per-epoch scheduler);
- optional ``freeze_prefixes``: codec parameter prefixes left untouched (not
  optimised, kept in eval mode so EMA codebooks do not move either);
  ``"tokens"`` means the codec's ``exact_prefixes``, the parts that make the
  tokens: the decoder alone is fine-tuned and the codec's tokens (and its
  fingerprint) stay the same, so models trained on them stay valid.

Modules: ``codec`` and (for the adversarial phase) ``discriminator``.

Example
-------
>>> from speechbrain_gense.models.simcodec import SimCodec, TINY_CONFIG
>>> from speechbrain_gense.models.codec_losses import (
...     CodecDiscriminator, CodecDiscriminatorLoss, CodecGeneratorLoss)
>>> hparams = {
...     "generator_loss": CodecGeneratorLoss(16000),
...     "discriminator_loss": CodecDiscriminatorLoss(),
...     "opt_class_generator": lambda p: torch.optim.Adam(p, 1e-3),
...     "opt_class_discriminator": lambda p: torch.optim.Adam(p, 1e-3),
...     "adversarial_start_epoch": 1, "valid_pesq_utterances": 0}
>>> brain = CodecBrain(modules={"codec": SimCodec(**TINY_CONFIG),
...                             "discriminator": CodecDiscriminator(width=0.0625)},
...                    hparams=hparams, run_opts={"device": "cpu"})
>>> brain.init_optimizers()
>>> batch = PaddedBatch([{"sig": torch.randn(1600)}, {"sig": torch.randn(1200)}])
>>> loss = brain.fit_batch(batch)
>>> loss.dim(), {"D_loss", "G_recon_loss", "G_commit_loss"} <= set(brain.last_losses)
(0, True)
"""

import logging
import math

import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch  # noqa: F401  (doctest)

from speechbrain_gense.metrics.intrusive import pesq_wb

logger = logging.getLogger(__name__)


def sample_mask(lens, num_samples, device=None):
    """``[B, 1, S]`` float mask of the valid samples of a padded batch.

    Example
    -------
    >>> sample_mask(torch.tensor([1.0, 0.5]), 4)[:, 0]
    tensor([[1., 1., 1., 1.],
            [1., 1., 0., 0.]])
    """
    n = torch.round(lens.to(device).float() * num_samples)
    return (torch.arange(num_samples, device=device)[None, :] < n[:, None]).float()[:, None]


class CodecBrain(sb.Brain):
    """Trains a codec; see the module docstring for the hparams it reads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sums, self._count, self._pesq = {}, 0, []
        self.last_losses, self.train_stats, self.last_stats = {}, {}, {}

    @property
    def frozen_prefixes(self):
        """The codec parameter prefixes that are not trained (``freeze_prefixes``)."""
        prefixes = getattr(self.hparams, "freeze_prefixes", None) or ()
        if prefixes == "tokens":
            prefixes = getattr(self.modules.codec, "exact_prefixes", ())
        if isinstance(prefixes, str):
            prefixes = (prefixes,)
        return tuple(prefixes)

    def compute_forward(self, batch, stage):
        """Reconstructs ``batch.sig``: returns the codec's output dict plus
        ``target`` and ``mask`` (both ``[B, 1, S]``, padding zeroed)."""
        for prefix in self.frozen_prefixes:  # frozen parts stay in eval mode
            self.modules.codec.get_submodule(prefix.rstrip(".")).eval()
        batch = batch.to(self.device)
        wav, lens = batch.sig
        out = self.modules.codec(wav, lens)
        mask = sample_mask(lens, wav.shape[-1], self.device)
        out["target"] = wav.unsqueeze(1) * mask
        out["estimate"] = out["wav"].unsqueeze(1) * mask
        out["mask"] = mask
        return out

    @property
    def adversarial(self):
        """True once the epoch counter reaches ``adversarial_start_epoch``."""
        start = getattr(self.hparams, "adversarial_start_epoch", 1)
        if start is None or "discriminator" not in self.modules:
            return False
        counter = getattr(self.hparams, "epoch_counter", None)
        epoch = counter.current if counter is not None else 1
        return epoch >= start

    def compute_objectives(self, predictions, batch, stage):
        """Generator loss dict (``loss`` is the total to minimise)."""
        y_hat, y = predictions["estimate"], predictions["target"]
        adv = {}
        if stage == sb.Stage.TRAIN and self.adversarial:
            scores_fake, feats_fake = self.modules.discriminator(y_hat)
            with torch.no_grad():
                _, feats_real = self.modules.discriminator(y)
            adv = {"scores_fake": scores_fake, "feats_fake": feats_fake,
                   "feats_real": feats_real}
        return self.hparams.generator_loss(
            y_hat, y, commit_loss=predictions["commit_loss"], stage=stage, **adv)

    def fit_batch(self, batch):
        """One discriminator step (adversarial phase only), then one generator step."""
        out = self.compute_forward(batch, sb.Stage.TRAIN)
        losses = {}
        if self.adversarial:
            scores_fake, _ = self.modules.discriminator(out["estimate"].detach())
            scores_real, _ = self.modules.discriminator(out["target"])
            d_losses = self.hparams.discriminator_loss(scores_fake, scores_real)
            self.optimizer_d.zero_grad(set_to_none=True)
            d_losses["D_loss"].backward()
            self._clip(self.modules.discriminator)
            self.optimizer_d.step()
            losses.update({k: v.detach() for k, v in d_losses.items()})
        g_losses = self.compute_objectives(out, batch, sb.Stage.TRAIN)
        loss = g_losses["loss"]
        if not torch.isfinite(loss):
            self.nonfinite_count += 1
            logger.warning("Non-finite codec loss (%d so far); batch skipped",
                           self.nonfinite_count)
            if self.nonfinite_count > self.nonfinite_patience:
                raise ValueError("Loss is not finite and patience is exhausted")
            self.optimizer_g.zero_grad(set_to_none=True)
            return loss.detach().cpu()
        self.optimizer_g.zero_grad(set_to_none=True)
        loss.backward()
        self._clip(self.modules.codec)
        self.optimizer_g.step()
        self.optimizer_step += 1
        losses.update({k: v.detach() for k, v in g_losses.items() if torch.is_tensor(v)})
        self.last_losses = {k: float(v) for k, v in losses.items()}
        for k, v in self.last_losses.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1
        return loss.detach().cpu()

    def _clip(self, module):
        if self.max_grad_norm and self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.max_grad_norm)

    def evaluate_batch(self, batch, stage):
        out = self.compute_forward(batch, stage)
        losses = self.compute_objectives(out, batch, stage)
        for k, v in losses.items():
            if torch.is_tensor(v):
                self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1
        n_pesq = getattr(self.hparams, "valid_pesq_utterances", 0) or 0
        if len(self._pesq) < n_pesq:
            lens = torch.round(batch.sig[1] * out["target"].shape[-1]).long()
            for est, ref, n in zip(out["estimate"][:, 0], out["target"][:, 0], lens):
                if len(self._pesq) < n_pesq:
                    self._pesq.append(pesq_wb(est[:n].cpu(), ref[:n].cpu()))
        return losses["loss"].detach().cpu()

    def init_optimizers(self):
        """One optimizer for the codec (its unfrozen parameters), one for the
        discriminator (if any)."""
        frozen = self.frozen_prefixes
        trained = []
        for name, param in self.modules.codec.named_parameters():
            if name.startswith(frozen):
                param.requires_grad_(False)
            else:
                trained.append(param)
        if not trained:
            raise ValueError(f"freeze_prefixes {list(frozen)} leave no codec parameter to train")
        self.optimizer_g = self.hparams.opt_class_generator(trained)
        self.optimizers_dict = {"optimizer_g": self.optimizer_g}
        if "discriminator" in self.modules:
            self.optimizer_d = self.hparams.opt_class_discriminator(
                self.modules.discriminator.parameters())
            self.optimizers_dict["optimizer_d"] = self.optimizer_d
        if self.checkpointer is not None:
            for name, opt in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, opt)

    def on_stage_start(self, stage, epoch=None):
        self._sums, self._count, self._pesq = {}, 0, []
        quantizer = self.modules.codec.quantizer
        quantizer.reset_usage()
        for q in _vqs(quantizer):  # count usage in validation too (eval mode)
            q.track_usage = stage != sb.Stage.TRAIN

    def on_stage_end(self, stage, stage_loss, epoch=None):
        stats = {"loss": stage_loss}
        stats.update({k: v / max(self._count, 1) for k, v in self._sums.items()
                      if k not in ("loss", "G_loss")})
        stats.update(usage_stats(self.modules.codec.quantizer))
        if self._pesq:
            valid = [p for p in self._pesq if not math.isnan(p)]
            stats["pesq"] = sum(valid) / len(valid) if valid else float("nan")
        for q in _vqs(self.modules.codec.quantizer):
            q.track_usage = False
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        logger_ = getattr(self.hparams, "train_logger", None)
        if stage == sb.Stage.VALID:
            lr = self.optimizer_g.param_groups[0]["lr"]
            sched = getattr(self.hparams, "lr_annealing_generator", None)
            if sched is not None:
                sched.step()
            if logger_ is not None:
                logger_.log_stats(stats_meta={"epoch": epoch, "lr": lr,
                                              "adversarial": self.adversarial},
                                  train_stats=self.train_stats, valid_stats=stats)
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"loss": stats["loss"], "epoch": epoch},
                    min_keys=["loss"], num_to_keep=getattr(self.hparams, "keep_checkpoints", 2))
        elif logger_ is not None:
            logger_.log_stats(stats_meta={"Epoch loaded": epoch}, test_stats=stats)
        self.last_stats = stats


def _vqs(quantizer):
    """The VectorQuantizers of a quantizer: SimCodec's groups, the RVQ's codebooks, or itself."""
    for name in ("groups", "quantizers"):
        if hasattr(quantizer, name):
            return list(getattr(quantizer, name))
    return [quantizer]


def usage_stats(quantizer):
    """Flat ``{usage_*: value}`` of a quantizer's accumulated usage (for logging).

    Example
    -------
    >>> from speechbrain_gense.models.simcodec import GroupQuantizer
    >>> q = GroupQuantizer(4, 2); q.groups[0].usage[:2] = 1
    >>> usage_stats(q)["usage_g1_used"], usage_stats(q)["usage_g1_perplexity"]
    (2, 2.0)
    """
    out = {}
    for g, q in enumerate(_vqs(quantizer), start=1):
        s = q.stats()
        prefix = f"usage_g{g}" if len(_vqs(quantizer)) > 1 else "usage"
        out[f"{prefix}_used"] = s["used"]
        out[f"{prefix}_perplexity"] = s["perplexity"]
    return out


__all__ = ["CodecBrain", "sample_mask", "usage_stats"]


#: Where a warm-started run records what it started from (in its ``save_folder``).
WARM_START_FILE = "init_from.json"


def warm_start(codec, source, checkpointer=None, history_file=None):
    """Initialises ``codec`` from an exported codec unless a run can resume.

    A run that has checkpoints in its ``save_folder`` resumes from them (the
    checkpointer wins); otherwise the weights of ``source`` (a folder written by
    the recipe's export, e.g. ``pretrained/rvqcodec``) are copied into
    ``codec``, so training continues from shipped weights on a new machine
    where the previous run's checkpoints are gone (the optimizer restarts).
    The two configs must agree (a one-line ``ValueError`` says where not).

    Arguments
    ---------
    codec : torch.nn.Module
        The codec to initialise (``RVQCodec`` or ``SimCodec``).
    source : str
        An exported codec folder or file (shipped paths resolve from anywhere).
    checkpointer : speechbrain.utils.checkpoints.Checkpointer, optional
        When it has a checkpoint, nothing is copied.
    history_file : str, optional
        Where to record ``{"source", "history"}``: the source's training
        history (its ``training_history.json``, else one point from its
        ``codec_report.json``), read back by :func:`read_warm_start`.

    Returns
    -------
    dict or None
        ``{"source", "history"}`` when weights were copied, else ``None``.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.models.rvq_codec import RVQCodec, TINY_RVQ_CONFIG
    >>> from speechbrain_gense.tokenizers.rvq import RVQTokenizer
    >>> trained, fresh = RVQCodec(**TINY_RVQ_CONFIG), RVQCodec(**TINY_RVQ_CONFIG)
    >>> embed = lambda m: m.quantizer.quantizers[0].embed
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = RVQTokenizer(trained).save(d)
    ...     info = warm_start(fresh, d)
    >>> info["history"], torch.allclose(embed(trained), embed(fresh), atol=1e-2)
    ([], True)
    >>> warm_start(fresh, d)
    Traceback (most recent call last):
    ...
    ValueError: init_from: no exported codec at ...
    """
    import json
    import os

    if checkpointer is not None and checkpointer.find_checkpoint() is not None:
        return None
    from ..codec_eval import load_training_curve, report_point
    from ..paths import resolve_path
    from ..tokenizers.registry import load_tokenizer

    kind = type(codec).__name__
    path = resolve_path(str(source))
    if not os.path.exists(path):
        raise ValueError(f"init_from: no exported codec at {source}")
    prefix = {"RVQCodec": "rvq:", "SimCodec": "simcodec:"}.get(kind, "")
    model = load_tokenizer(prefix + path).model
    theirs, ours = getattr(model, "config", {}), getattr(codec, "config", {})
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if type(model) is not type(codec) or differ:
        raise ValueError(f"init_from: {source} is a {type(model).__name__} whose config "
                         f"differs from this {kind} in {differ or 'type'}")
    codec.load_state_dict(model.state_dict())
    logger.info("Codec initialised from %s (no checkpoint to resume)", source)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    shipped, report = (os.path.join(folder, name)
                       for name in ("training_history.json", "codec_report.json"))
    history = []
    if os.path.exists(shipped):
        history = load_training_curve(shipped)
    elif os.path.exists(report):
        with open(report) as f:
            history = [report_point(json.load(f))]
    info = {"source": str(source), "history": history}
    if history_file:
        os.makedirs(os.path.dirname(os.path.abspath(history_file)), exist_ok=True)
        with open(history_file, "w") as f:
            json.dump(info, f)
    return info


def read_warm_start(history_file):
    """What :func:`warm_start` recorded (``{"source", "history"}``), or ``None``."""
    import json
    import os

    if not os.path.exists(history_file):
        return None
    with open(history_file) as f:
        info = json.load(f)
    info.setdefault("history", [])
    return info
