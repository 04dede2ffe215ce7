"""MAGE's corrector: a light module that flags the enhancer's wrong tokens.

MAGE (masked audio generative enhancement) refines its token predictions
over several passes. After each pass a small *corrector* reads the
enhancer's final hidden states and the tokens it predicted and scores, per
frame and codebook, the probability that the token is correct.

Training recipe
---------------
The enhancer is trained to predict masked tokens. On the same batches, the
corrector takes the enhancer's last hidden states ``hidden[B, T, H]``
(usually detached) and its predictions ``tokens[B, T, K]`` (e.g. argmax or
sampled) and learns to flag which predictions are wrong: :meth:`Corrector.loss`
is a binary cross-entropy whose label is ``predicted == target``, computed
over the positions the enhancer had to predict (the masked ones). As the
enhancer improves, most predictions become correct: ``pos_weight < 1``
re-balances the two classes.

At inference the decoding module calls :meth:`Corrector.confidence` and
re-masks the lowest-confidence tokens for another refinement pass. The
per-frame confidence is also a user-facing output (where the enhancement is
unsure).

Example
-------
>>> corrector = Corrector(hidden_size=32, vocab_size=100, dim=16)
>>> hidden, tokens = torch.randn(2, 10, 32), torch.randint(0, 100, (2, 10, 1))
>>> lens = torch.tensor([1.0, 0.6])
>>> corrector(hidden, tokens, lens).shape
torch.Size([2, 10, 1])
>>> conf = corrector.confidence(hidden, tokens, lens)
>>> conf.shape, conf[1, 6:].abs().sum().item()
(torch.Size([2, 10, 1]), 0.0)
"""

import torch
import torch.nn.functional as F
from speechbrain.dataio.dataio import length_to_mask
from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding
from torch import nn

from .io import ConfigCheckpoint

KINDS = ("blstm", "transformer")


def frame_mask(lens, num_frames, device=None):
    """``[B, T]`` bool mask of the valid frames for relative lengths ``lens``.

    A frame count is ``round(lens * num_frames)`` (the project's convention
    for lengths relative to the padded token tensor).

    Example
    -------
    >>> frame_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[ True,  True,  True,  True],
            [ True,  True, False, False]])
    """
    keep = torch.round(lens.float() * num_frames).long().clamp(0, num_frames)
    return length_to_mask(keep.to(device), num_frames, dtype=torch.bool, device=device)


class Corrector(ConfigCheckpoint, nn.Module):
    """Per-token correctness scorer over the enhancer's hidden states and tokens.

    The input of the sequence model is ``Linear(hidden) + sum_k Embedding_k(tokens[..., k])``
    (layer-normalised); a bidirectional LSTM or a small Transformer encoder
    follows, and a linear head gives one logit per frame and codebook.
    Padding is respected: the LSTM runs on packed sequences, the Transformer
    masks padded keys.

    Arguments
    ---------
    hidden_size : int
        Size ``H`` of the enhancer's hidden states.
    vocab_size : int
        Token vocabulary size per codebook.
    num_codebooks : int
        ``K`` (1 for MAGE).
    dim : int
        Width of the corrector (LSTM size per direction; Transformer model size).
    num_layers : int
        LSTM or Transformer layers.
    kind : str
        ``"blstm"`` or ``"transformer"``.
    dropout : float
        Dropout on the input and between layers.
    pos_weight : float, optional
        Weight of the positive class ("correct") in :meth:`loss`; below 1 it
        emphasises the (rarer) wrong tokens.
    num_heads : int
        Attention heads (Transformer only; must divide ``dim``).
    max_len : int
        Longest sequence in frames (Transformer positional encoding).

    Example
    -------
    >>> model = Corrector(32, 50, num_codebooks=2, dim=16, kind="transformer")
    >>> hidden, tokens = torch.randn(3, 7, 32), torch.randint(0, 50, (3, 7, 2))
    >>> logits = model(hidden, tokens, torch.tensor([1.0, 0.5, 0.2]))
    >>> logits.shape
    torch.Size([3, 7, 2])
    >>> stats = model.loss(logits, tokens, tokens, torch.ones(3, 7, 2, dtype=torch.bool))
    >>> sorted(stats), stats["n"].item(), stats["pos_rate"].item()
    (['acc', 'loss', 'n', 'pos_rate'], 42, 1.0)
    """

    def __init__(self, hidden_size, vocab_size, num_codebooks=1, dim=128, num_layers=1,
                 kind="blstm", dropout=0.0, pos_weight=None, num_heads=4, max_len=4096):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.config = dict(
            hidden_size=hidden_size, vocab_size=vocab_size, num_codebooks=num_codebooks,
            dim=dim, num_layers=num_layers, kind=kind, dropout=dropout,
            pos_weight=None if pos_weight is None else float(pos_weight),
            num_heads=num_heads, max_len=max_len)
        self.vocab_size, self.num_codebooks, self.kind = vocab_size, num_codebooks, kind
        self.pos_weight = self.config["pos_weight"]
        self.hidden_proj = nn.Linear(hidden_size, dim)
        # One table for all codebooks; codebook k uses rows [k * V, (k + 1) * V).
        self.token_emb = nn.Embedding(num_codebooks * vocab_size, dim)
        self.register_buffer("offsets", torch.arange(num_codebooks) * vocab_size,
                             persistent=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        if kind == "blstm":
            self.rnn = nn.LSTM(dim, dim, num_layers=num_layers, batch_first=True,
                               bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)
            out_dim = 2 * dim
        else:
            self.pos_enc = PositionalEncoding(dim, max_len=max_len)
            layer = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=2 * dim,
                                               dropout=dropout, batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(dim),
                                                 enable_nested_tensor=False)
            out_dim = dim
        self.head = nn.Linear(out_dim, num_codebooks)

    def _check(self, hidden, tokens):
        if hidden.dim() != 3 or tokens.dim() != 3 or hidden.shape[:2] != tokens.shape[:2] \
                or tokens.shape[2] != self.num_codebooks:
            raise ValueError(f"expected hidden [B, T, H] and tokens [B, T, {self.num_codebooks}],"
                             f" got {tuple(hidden.shape)} and {tuple(tokens.shape)}")

    def forward(self, hidden, tokens, lens=None):
        """Correctness logits.

        Arguments
        ---------
        hidden : torch.Tensor
            ``[B, T, H]`` final hidden states of the enhancer.
        tokens : torch.LongTensor
            ``[B, T, K]`` predicted tokens (values in ``[0, vocab_size)`` at
            valid frames; padded frames may hold anything).
        lens : torch.Tensor, optional
            ``[B]`` relative lengths (default: all frames valid).

        Returns
        -------
        torch.Tensor
            ``[B, T, K]`` logits of "this token is correct" (values at padded
            frames are meaningless).
        """
        self._check(hidden, tokens)
        T = tokens.shape[1]
        mask = None if lens is None else frame_mask(lens, T, tokens.device)
        if mask is not None:
            tokens = tokens.masked_fill(~mask[..., None], 0)
        x = self.hidden_proj(hidden) + self.token_emb(tokens + self.offsets).sum(dim=2)
        x = self.dropout(self.norm(x))
        if self.kind == "blstm":
            if mask is None:
                x, _ = self.rnn(x)
            else:
                lengths = mask.sum(1).clamp(min=1).cpu()
                packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                           enforce_sorted=False)
                x, _ = self.rnn(packed)
                x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=T)
        else:
            if T > self.pos_enc.max_len:
                raise ValueError(f"{T} frames exceed max_len={self.pos_enc.max_len}")
            padding = None
            if mask is not None:
                padding = ~mask
                padding[mask.sum(1) == 0] = False  # empty items: avoid all-masked NaN
            x = self.encoder(x + self.pos_enc(x), src_key_padding_mask=padding)
        return self.head(x)

    @torch.no_grad()
    def confidence(self, hidden, tokens, lens=None):
        """Probability that each token is correct (no gradients).

        Call ``.eval()`` first to disable dropout.

        Returns
        -------
        torch.Tensor
            ``[B, T, K]`` probabilities; 0 at padded frames.

        Example
        -------
        >>> model = Corrector(8, 10, dim=8).eval()
        >>> p = model.confidence(torch.randn(1, 4, 8), torch.zeros(1, 4, 1).long(),
        ...                      torch.tensor([0.5]))
        >>> p.shape, bool((p[0, :2] > 0).all()), p[0, 2:].sum().item()
        (torch.Size([1, 4, 1]), True, 0.0)
        """
        probs = torch.sigmoid(self.forward(hidden, tokens, lens))
        if lens is not None:
            mask = frame_mask(lens, tokens.shape[1], probs.device)
            probs = probs.masked_fill(~mask[..., None], 0.0)
        return probs

    def loss(self, logits, predicted, target, mask=None):
        """Binary cross-entropy of the correctness logits.

        Arguments
        ---------
        logits : torch.Tensor
            ``[B, T, K]`` output of :meth:`forward`.
        predicted : torch.LongTensor
            ``[B, T, K]`` tokens the enhancer predicted.
        target : torch.LongTensor
            ``[B, T, K]`` true (clean) tokens.
        mask : torch.BoolTensor, optional
            ``[B, T, K]`` (or ``[B, T]``) positions to score, usually the
            ones the enhancer had to predict, padding excluded (default: all).

        Returns
        -------
        dict
            ``loss`` (scalar, mean over the scored positions, weighted by
            ``pos_weight``), ``acc`` (accuracy of thresholding the probability
            at 0.5), ``n`` (number of scored positions), ``pos_rate`` (fraction
            of correct tokens among them). With ``n == 0``, ``loss`` is a
            zero still attached to the graph and ``acc``, ``pos_rate`` are 0.

        Example
        -------
        >>> model = Corrector(8, 10, dim=8)
        >>> logits = torch.tensor([[[2.0], [-2.0], [2.0]]])
        >>> pred, tgt = torch.tensor([[[1], [2], [3]]]), torch.tensor([[[1], [0], [0]]])
        >>> out = model.loss(logits, pred, tgt, torch.tensor([[True, True, False]]))
        >>> round(out["loss"].item(), 4), out["acc"].item(), out["n"].item(), out["pos_rate"].item()
        (0.1269, 1.0, 2, 0.5)
        """
        labels = (predicted == target).to(logits.dtype)
        if mask is None:
            mask = torch.ones_like(labels, dtype=torch.bool)
        elif mask.dim() == 2:
            mask = mask[..., None].expand_as(labels)
        mask = mask.to(torch.bool)
        sel_logits, sel_labels = logits[mask], labels[mask]
        n = mask.sum()
        if sel_logits.numel() == 0:
            zero = logits.sum() * 0.0
            return {"loss": zero, "acc": zero.detach(), "n": n, "pos_rate": zero.detach()}
        pos_weight = None
        if self.pos_weight is not None:
            pos_weight = torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(sel_logits, sel_labels, pos_weight=pos_weight)
        with torch.no_grad():
            acc = ((sel_logits > 0).to(sel_labels.dtype) == sel_labels).float().mean()
            pos_rate = sel_labels.float().mean()
        return {"loss": loss, "acc": acc, "n": n, "pos_rate": pos_rate}

    # -- persistence -------------------------------------------------------

