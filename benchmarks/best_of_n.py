"""Best of N decoding candidates on a split: per-file Whisper dWER of each candidate and
of each way of choosing one (model confidence, transcript consensus, token / feature
consensus, closest to the noisy transcript, oracle). Measures what ``selection`` builds on.

Usage: python benchmarks/best_of_n.py MANIFEST N OUT.json [SHARD NSHARDS]"""
import json, sys, numpy as np, torch
from speechbrain_gense.models.mage import MAGE
from speechbrain_gense.audio import load_audio
from speechbrain_gense.metrics.wer import WhisperTranscriber, word_errors
torch.set_num_threads(1)
man_path, N, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
shard, nshards = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (0, 1)
root = man_path.rsplit("/", 1)[0]
m = MAGE.load("pretrained/mage"); m.eval()
asr = WhisperTranscriber()
man = json.load(open(man_path))
rows = {}
for i, (key, it) in enumerate(sorted(man.items())):
    if i % nshards != shard:
        continue
    noisy = load_audio(it["noisy_wav"].replace("{data_root}", root), m.sample_rate, resample=True)[0].reshape(1, -1)
    clean = load_audio(it["clean_wav"].replace("{data_root}", root), m.sample_rate, resample=True)[0].reshape(1, -1)
    g = torch.Generator().manual_seed(1000 + i)
    res = m.enhance(noisy.expand(N, -1).contiguous(), generator=g)
    conf = res["confidence"].mean(1).tolist()
    texts = asr.transcribe_many([w.numpy() for w in res["wav"]], m.sample_rate)
    ref = asr.transcribe(clean[0].numpy(), m.sample_rate)
    noisy_t = asr.transcribe(noisy[0].numpy(), m.sample_rate)
    errs = [word_errors(ref, t) for t in texts]
    tok = res["tokens"]
    tcons0 = [(tok[j, :, 0] != tok[:, :, 0]).float().sum().item() for j in range(N)]
    tcons = [(tok[j] != tok).float().sum().item() for j in range(N)]
    with torch.no_grad():
        fn = torch.nn.functional.normalize(m.content_encoder(noisy, None), dim=-1)
        fo = torch.nn.functional.normalize(m.content_encoder(res["wav"], None), dim=-1)
    T = min(fn.shape[1], fo.shape[1]); fn, fo = fn[:, :T], fo[:, :T]
    fnoisy = (1 - (fo * fn).sum(-1)).mean(1).tolist()
    fcons = [(1 - (fo[j:j+1] * fo).sum(-1)).mean().item() for j in range(N)]
    words = max(errs[0][1], 1)
    # consensus: the candidate with the fewest word differences to the others
    cons = [sum(word_errors(a, b)[0] for b in texts if b is not a) for a in texts]
    rows[key] = dict(snr=it.get("snr"), conf=conf, dwer=[e / words for e, _ in errs],
                     noisy_dwer=word_errors(ref, noisy_t)[0] / words, cons=cons,
                     to_noisy=[word_errors(noisy_t, t)[0] for t in texts],
                     tcons0=tcons0, tcons=tcons, fnoisy=fnoisy, fcons=fcons)
    if i % 20 == 0:
        print(i, flush=True)
json.dump(rows, open(out, "w"))
D = np.array([r["dwer"] for r in rows.values()]); C = np.array([r["conf"] for r in rows.values()])
S = np.array([r["cons"] for r in rows.values()]); Z = np.array([r["noisy_dwer"] for r in rows.values()])
TN = np.array([r["to_noisy"] for r in rows.values()])
ar = np.arange(len(D))
print("files", len(D), "noisy", Z.mean())
print("each candidate", D.mean(0), "mean", D.mean())
print("max confidence", D[ar, C.argmax(1)].mean(), "min confidence", D[ar, C.argmin(1)].mean())
print("consensus", D[ar, S.argmin(1)].mean(), "closest to noisy transcript", D[ar, TN.argmin(1)].mean())
for name in ("tcons0", "tcons", "fnoisy", "fcons"):
    A = np.array([r[name] for r in rows.values()]); print(name, D[ar, A.argmin(1)].mean())
print("oracle", D.min(1).mean())
