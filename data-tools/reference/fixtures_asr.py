"""ASR parity fixtures: an SB-layout EncoderDecoderASR model directory in the official
asr-crdnn-rnnlm-librispeech shape (CRDNN encoder, GRU decoder with location attention, RNNLM,
SentencePiece unigram tokenizer; every key and class of the official hyperparams.yaml, only the
sizes shrunk), seeded random weights, and SpeechBrain 1.1.2's outputs on real (espeak-ng) speech:
normalized features, encoder states, greedy / beam (with and without LM) token sequences, a
padded-batch transcription, RNNLM logits and tokenizer round trips.

Also writes `official_shapes.json`: every state_dict key/shape and parameter count of the
official full-size asr_model and lm_model (instantiated from the official yaml, no weights).

`write_model_dir(..., size="full")` builds the same kind of directory at the official sizes
(official yaml and normalizer.ckpt, 1000-piece tokenizer) for full_size_asr.sh.

Run: $VENV/bin/python data-tools/reference/make_fixtures.py asr
"""

import os
import random
import shutil
import tempfile

import numpy as np
import soundfile as sf
import torch

from common import save_json, save_npy, speech

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OFFICIAL_DIR = os.path.join(ROOT, "..", "shared", "reference-models", "asr-crdnn-rnnlm-librispeech")
OFFICIAL = os.path.join(OFFICIAL_DIR, "hyperparams.yaml")

VOCAB = 48  # output_neurons = tokenizer vocabulary size
FULL_VOCAB = 1000  # the official output_neurons (size="full")
# Chosen among seeds for which no beam-search step (single or batched) has every hypothesis
# of an utterance blocked by max_attn_shift (that makes every score -1e20, and the result then
# depends on torch.topk's order among ties) while some steps block some hypotheses.
SEED = 10

# The three input utterances: (common.VOICES index, text). 16 kHz, ~1.2 s, ~1.7 s, ~2.2 s.
UTTERANCES = [
    (0, "Open the door."),
    (2, "It is easy to tell."),
    (3, "The birch canoe slid on the planks."),
]

# The small configuration: (official text, replacement); each must occur exactly `count` times.
SMALL = [
    ("cnn_channels: (128, 256)", "cnn_channels: (4, 8)", 1),
    ("rnn_layers: 4", "rnn_layers: 2", 1),
    ("rnn_neurons: 1024", "rnn_neurons: 16", 1),
    ("\ndnn_neurons: 512", "\ndnn_neurons: 16", 1),
    ("emb_size: 128", "emb_size: 8", 1),
    ("dec_neurons: 1024", "dec_neurons: 16", 1),
    ("output_neurons: 1000", f"output_neurons: {VOCAB}", 1),
    ("beam_size: 80", "beam_size: 8", 1),
    ("max_attn_shift: 240",
     "max_attn_shift: 3  # voxbrain fixture: official 240; 3 so that the attention-shift limit"
     " blocks hypotheses on these short inputs (29-54 encoder frames)", 1),
    ("attn_dim: 1024", "attn_dim: 12", 1),
    ("channels: 10", "channels: 3", 1),
    ("kernel_size: 100", "kernel_size: 5", 1),
    ("rnn_neurons: 2048", "rnn_neurons: 24", 1),
    ("    dnn_neurons: 512", "    dnn_neurons: 16", 1),
]

HEADER = (
    "# voxbrain parity fixture (data-tools/reference/fixtures_asr.py): the official\n"
    "# asr-crdnn-rnnlm-librispeech hyperparams.yaml with only the sizes shrunk; seeded random\n"
    "# weights, a SentencePiece unigram tokenizer trained on generated text.\n"
)


def small_yaml():
    with open(OFFICIAL) as f:
        text = f.read()
    for a, b, count in SMALL:
        assert text.count(a) == count, (a, text.count(a))
        text = text.replace(a, b)
    return HEADER + text


def official_yaml():
    """The official hyperparams.yaml, byte for byte (size="full")."""
    with open(OFFICIAL) as f:
        return f.read()


# ----------------------------------------------------------------------------- tokenizer

WORDS = (
    "THE A AN OF TO AND IN IS IT THAT WAS HE SHE FOR ON ARE WITH AS HIS HER THEY AT BE THIS "
    "FROM HAVE OR BY ONE HAD NOT BUT WHAT ALL WERE WHEN WE THERE CAN YOUR WHICH THEIR SAID "
    "IF DO WILL EACH ABOUT HOW UP OUT THEM THEN MANY SOME SO THESE WOULD OTHER INTO MORE TIME "
    "TWO LIKE SEE NO COULD PEOPLE MY THAN FIRST BEEN WHO NOW FIND DOWN DAY DID GET COME MADE "
    "MAY PART OVER NEW SOUND TAKE ONLY LITTLE WORK KNOW PLACE YEAR LIVE ME BACK GIVE MOST VERY "
    "AFTER THING OUR JUST NAME GOOD MAN THINK SAY GREAT WHERE HELP THROUGH MUCH BEFORE LINE "
    "RIGHT TOO MEAN OLD ANY SAME TELL BOY FOLLOW CAME WANT SHOW ALSO AROUND FORM THREE SMALL "
    "SET PUT END WELL LARGE MUST BIG EVEN SUCH TURN HERE WHY ASK WENT MEN READ NEED LAND HOME "
    "HAND HOUSE PICTURE AGAIN CHANGE LIGHT KIND OFF HOUSE OPEN DOOR EASY BIRCH CANOE SLID "
    "PLANKS SMOOTH GLUE SHEET DARK BLUE BACKGROUND DEPTH RICE OFTEN SERVED ROUND BOWLS JUICE "
    "LEMONS MAKES FINE PUNCH CHICKEN LEG RARE DISH STEADY HOURS FACED RIVER SPRING CLEAR "
    "MORNING EVENING FATHER MOTHER CHILDREN WATER FIRE STONE GARDEN WINDOW QUIET SLOWLY "
    "QUICKLY FOREST JOURNEY KING QUEEN LETTER VOICE WHISPERED ANSWERED ZEAL JAZZ EXTRA"
).split()
CONTRACTIONS = ["DON'T", "IT'S", "HE'S", "I'M", "WON'T", "CAN'T", "THEY'RE", "FATHER'S", "KING'S"]


def tokenizer_corpus(lines=400, seed=0):
    """LibriSpeech-like (uppercase, apostrophes, no punctuation) generated sentences."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        n = rng.randint(4, 14)
        words = [rng.choice(CONTRACTIONS) if rng.random() < 0.06 else rng.choice(WORDS) for _ in range(n)]
        out.append(" ".join(words))
    return out


ONSETS = ("", "B", "BL", "BR", "CH", "D", "DR", "F", "FL", "FR", "G", "GL", "GR", "H", "J", "K",
          "L", "M", "N", "P", "PL", "PR", "QU", "R", "S", "SH", "SK", "SL", "SM", "SP", "ST", "STR",
          "T", "TH", "TR", "V", "W", "WH", "Y", "Z")
NUCLEI = ("A", "E", "I", "O", "U", "AI", "AU", "AY", "EA", "EE", "IE", "OA", "OI", "OO", "OU", "OW")
CODAS = ("", "", "", "CK", "D", "F", "G", "L", "LD", "LL", "M", "N", "ND", "NG", "NT", "P", "R",
         "RD", "RN", "RT", "S", "SS", "ST", "T", "TH", "X")


def full_tokenizer_corpus(lines=6000, seed=0, pseudo_words=4000):
    """A larger generated corpus for the official 1000-piece vocabulary: the English words
    above, then pronounceable pseudo-words (1-2 syllables), Zipf-distributed in that order."""
    rng = random.Random(seed)
    pseudo = set()
    while len(pseudo) < pseudo_words:
        pseudo.add("".join(rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS)
                           for _ in range(rng.randint(1, 2))))
    english = list(dict.fromkeys(WORDS))
    pseudo = sorted(pseudo - set(english))
    rng.shuffle(pseudo)
    vocab = english + pseudo
    weights = [1.0 / (r + 1) for r in range(len(vocab))]
    out = []
    for _ in range(lines):
        words = rng.choices(vocab, weights=weights, k=rng.randint(4, 16))
        words = [rng.choice(CONTRACTIONS) if rng.random() < 0.03 else w for w in words]
        out.append(" ".join(words))
    return out


def train_tokenizer(model_path, vocab_size=VOCAB, corpus=None):
    """SentencePiece unigram with SpeechBrain's settings (unk 0, no bos/eos/pad, so id 0 is
    also SB's bos/eos/blank), written to `model_path` (SB's `tokenizer.ckpt` is the .model)."""
    import io

    import sentencepiece as spm

    # Sentences from an iterator and the model to a buffer: the model's trainer_spec then holds
    # no (temporary) file paths, and the file is byte-for-byte reproducible.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus() if corpus is None else corpus),
        model_writer=model, model_type="unigram",
        vocab_size=vocab_size, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        max_sentencepiece_length=10, character_coverage=1.0, add_dummy_prefix=True,
        num_threads=1, minloglevel=2,
    )
    with open(model_path, "wb") as f:
        f.write(model.getvalue())


# ----------------------------------------------------------------------------- weights

def randomize(module, gen, scales=None):
    """Seeded weights: matrices ~ N(0, 1/fan_in) (times a per-prefix scale), norm gains
    U(0.5, 1.5), biases U(-0.1, 0.1); BatchNorm running stats are set later (calibrate_bn)."""
    scales = scales or {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            is_norm = ".norm." in name or name.startswith("norm.")
            if is_norm and name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith("bias") or "bias_" in name:
                p.copy_(0.2 * torch.rand(p.shape, generator=gen) - 0.1)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                scale = next((s for pre, s in scales.items() if name.startswith(pre)), 1.0)
                p.copy_(scale * torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))


def calibrate_bn(enc, feats_list):
    """Real BatchNorm running statistics: cumulative averages over the fixture utterances'
    normalized features (train mode for the BatchNorm layers only; dropout stays off)."""
    bns = [m for m in enc.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    enc.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for f in feats_list:
            enc(f)
    for m in bns:
        m.momentum = 0.1
        m.eval()
    return len(bns)


# ----------------------------------------------------------------------------- audio

def make_wavs(out):
    """espeak-ng speech resampled to 16 kHz and written as 16-bit PCM wavs."""
    import torchaudio

    paths = []
    for i, (voice, text) in enumerate(UTTERANCES):
        x, sr = speech(voice, text=text)
        y = torchaudio.functional.resample(torch.from_numpy(x), sr, 16000).numpy()
        y = 0.9 * y / max(1e-9, float(np.abs(y).max()))
        assert 1.0 <= len(y) / 16000 <= 2.5, (i, len(y) / 16000)
        path = os.path.join(out, f"utt_{i}.wav")
        sf.write(path, y, 16000, subtype="PCM_16")
        paths.append(path)
    return paths


def read_wav(path):
    """The PCM_16 file as SpeechBrain's `load_audio` returns it (what `transcribe_file` sees)."""
    from fixtures_foundation import sb_load_audio

    x = sb_load_audio(path, 16000)
    assert x.dim() == 1, x.shape
    return x.float()


# ----------------------------------------------------------------------------- model dir

# Per-prefix weight scales (see `randomize`): the decoder driven more by its input (token
# embedding + attention context) than by its recurrence, a sharp output layer (greedy decoding
# wanders over the vocabulary with clear top-1/top-2 margins), sharp attention with a weak
# encoder-content term and a strong decoder-state term (hypotheses differ in where they
# attend), and a sharp LM output so the shallow fusion changes the beam search result.
ASR_SCALES = {"2.rnn.rnn_cells.0.weight_ih": 2.0, "2.rnn.rnn_cells.0.weight_hh": 0.5,
              "2.attn.mlp_enc": 1.0, "2.attn.mlp_dec": 3.0, "2.attn.mlp_out": 2.0,
              "2.attn.mlp_attn": 4.0, "2.proj": 2.0, "4.": 3.0}
LM_SCALES = {"out.": 6.0}
SHIFT_PRIOR = {"gain": 100.0, "n_move": 6, "move_threshold": 1.0, "stay_threshold": 3.0}
# size="full" (attn_dim 1024): the same split, half of the attention features for "move".
FULL_SHIFT_PRIOR = dict(SHIFT_PRIOR, n_move=512)


def forward_shift_prior(attn, gain, n_move, move_threshold, stay_threshold):
    """What trained location-aware attention learns, put into the random weights.

    Location filter channel 0 computes gain * (prev_attn[j-1] - prev_attn[j-2]) ("move on one
    frame"), channel 1 gain * (prev_attn[j] - prev_attn[j+1]) ("stay"); `mlp_loc` maps them
    along the sign of `mlp_attn` on disjoint feature sets (the `n_move` largest |mlp_attn|
    entries for "move", the rest for "stay": moving wins in the middle, staying at the last
    frame), each behind a threshold (an `mlp_loc` bias against the sign) so that the small
    attention mass left on far frames does not count. The first step's prev_attn is uniform,
    which makes frame 1 the one after the "peak": the attention starts there and walks forward
    unless the decoder state pulls it elsewhere (that is where max_attn_shift blocks a
    hypothesis). Without this, random location filters park the attention mid-utterance, and
    with max_attn_shift 3 the beam search then blocks every hypothesis from step 0 on (all
    scores -1e20: ties, decided by torch.topk's tie order)."""
    k = attn.conv_loc.weight.shape[-1] // 2  # kernel 2k+1, padding k: tap k+o reads j+o
    a = attn.mlp_attn.weight[0]
    order = torch.argsort(a.abs(), descending=True)
    move, stay = order[:n_move], order[n_move:]
    with torch.no_grad():
        w = attn.conv_loc.weight
        w[:2].zero_()
        w[0, 0, k - 1], w[0, 0, k - 2] = gain, -gain
        w[1, 0, k], w[1, 0, k + 1] = gain, -gain
        attn.mlp_loc.weight[:, :2] = 0.0
        attn.mlp_loc.weight[move, 0] = torch.sign(a[move])
        attn.mlp_loc.weight[stay, 1] = torch.sign(a[stay])
        attn.mlp_loc.bias[move] = -move_threshold * torch.sign(a[move])
        attn.mlp_loc.bias[stay] = -stay_threshold * torch.sign(a[stay])


def write_model_dir(model_dir, wavs, seed=SEED, asr_scales=None, lm_scales=None, shift=None,
                    size="small"):
    """hyperparams.yaml + asr/lm/normalizer/tokenizer .ckpt in SpeechBrain's layout.

    size="small": the parity fixture (shrunk yaml, normalizer statistics of `wavs`).
    size="full": the official yaml unchanged (official sizes: 120M + 53M parameters), the real
    official normalizer.ckpt, a 1000-piece tokenizer; the same weight tricks (`wavs` only
    calibrate the BatchNorm statistics). Used by full_size_asr.sh."""
    from hyperpyyaml import load_hyperpyyaml

    assert size in ("small", "full"), size
    full = size == "full"
    os.makedirs(model_dir, exist_ok=True)
    text = official_yaml() if full else small_yaml()
    with open(os.path.join(model_dir, "hyperparams.yaml"), "w") as f:
        f.write(text)
    if full:
        train_tokenizer(os.path.join(model_dir, "tokenizer.ckpt"), vocab_size=FULL_VOCAB,
                        corpus=full_tokenizer_corpus())
    else:
        train_tokenizer(os.path.join(model_dir, "tokenizer.ckpt"))

    torch.manual_seed(seed)
    hp = load_hyperpyyaml(text)
    gen = torch.Generator().manual_seed(seed)

    norm, fbank = hp["normalizer"], hp["compute_features"]
    with torch.no_grad():
        raw = [fbank(w.unsqueeze(0)) for w in wavs]
    if full:
        shutil.copyfile(os.path.join(OFFICIAL_DIR, "normalizer.ckpt"),
                        os.path.join(model_dir, "normalizer.ckpt"))
        norm._load(os.path.join(model_dir, "normalizer.ckpt"))
    else:
        # Global normalizer statistics from the fixture utterances' Fbank features (train
        # mode, one utterance per update, as SpeechBrain accumulates them during training).
        norm.train()
        with torch.no_grad():
            for f in raw:
                norm(f, torch.tensor([1.0]), epoch=0)
        norm.eval()
        norm._save(os.path.join(model_dir, "normalizer.ckpt"))
    norm.eval()
    with torch.no_grad():
        feats = [norm(f, torch.tensor([1.0])) for f in raw]

    asr = hp["asr_model"]
    randomize(asr, gen, scales=ASR_SCALES if asr_scales is None else asr_scales)
    if shift is None:
        shift = FULL_SHIFT_PRIOR if full else SHIFT_PRIOR
    forward_shift_prior(hp["dec"].attn, **shift)
    n_bn = calibrate_bn(hp["enc"], feats)
    assert n_bn == 2, n_bn
    asr.eval()
    torch.save(asr.state_dict(), os.path.join(model_dir, "asr.ckpt"))

    lm = hp["lm_model"]
    randomize(lm, gen, scales=LM_SCALES if lm_scales is None else lm_scales)
    lm.eval()
    torch.save(lm.state_dict(), os.path.join(model_dir, "lm.ckpt"))
    return hp


def param_count(module):
    return int(sum(p.numel() for p in module.parameters()))


def shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def official_shapes():
    """Keys/shapes and parameter counts of the official full-size modules (no weights)."""
    from hyperpyyaml import load_hyperpyyaml

    with open(OFFICIAL) as f:
        hp = load_hyperpyyaml(f.read())
    return {
        "asr": shapes(hp["asr_model"]), "lm": shapes(hp["lm_model"]),
        "asr_params": param_count(hp["asr_model"]), "lm_params": param_count(hp["lm_model"]),
    }


# ----------------------------------------------------------------------------- fixtures

def greedy(asr, enc):
    """S2SRNNGreedySearcher on the encoder states; also the smallest top-1/top-2 log-prob
    margin over the emitted steps (ties would make the fixture ambiguous)."""
    from speechbrain.decoders import S2SRNNGreedySearcher

    mods = asr.hparams
    searcher = S2SRNNGreedySearcher(
        embedding=mods.emb, decoder=mods.dec, linear=mods.seq_lin,
        bos_index=0, eos_index=0, min_decode_ratio=0.0, max_decode_ratio=1.0,
    )
    searcher.eval()
    steps = []  # the logits of every step (SB overwrites the EOS step's log-probs with -inf)
    forward_step = searcher.forward_step

    def recording_step(*args, **kwargs):
        logits, memory, attn = forward_step(*args, **kwargs)
        steps.append(logits.clone())
        return logits, memory, attn

    searcher.forward_step = recording_step
    hyps, _, _, _ = searcher(enc, torch.tensor([1.0]))
    top2 = torch.log_softmax(torch.cat(steps), dim=-1).topk(2, dim=-1).values
    margin = float((top2[:, 0] - top2[:, 1]).min())
    return [int(t) for t in hyps[0]], margin, len(steps)


def nolm_searcher(asr):
    """The yaml's beam search without the scorer (no LM, no coverage penalty)."""
    from speechbrain.decoders import S2SRNNBeamSearcher

    h = asr.hparams
    searcher = S2SRNNBeamSearcher(
        embedding=h.emb, decoder=h.dec, linear=h.seq_lin,
        bos_index=h.bos_index, eos_index=h.eos_index,
        min_decode_ratio=h.min_decode_ratio, max_decode_ratio=h.max_decode_ratio,
        beam_size=h.beam_size, eos_threshold=h.eos_threshold,
        using_max_attn_shift=h.using_max_attn_shift, max_attn_shift=h.max_attn_shift,
        temperature=h.temperature, scorer=None,
    )
    searcher.eval()
    return searcher


class BeamTrace:
    """Instruments an S2SBeamSearcher instance (instance attributes shadow its methods) to
    record how each utterance's search went: the steps where max_attn_shift blocked some
    hypotheses, and where the winning hypothesis came from. SB collects a hypothesis when it
    emits EOS ("eos"), and, if fewer than beam_size have by the last step, adds the alive ones
    with `_fill_alived_hyps_with_eos_token` ("fill"); either way the hypothesis' last token is
    cut off (`(len - 1) / max_len`), which for "fill" drops a real token."""

    def __init__(self, searcher):
        self.searcher = searcher
        self.step, self.in_fill, self.blocked, self.entries = -1, False, [], {}
        self.gaps = []  # per step and utterance: beam_size-th minus next candidate score
        names = ["search_step", "_check_attn_shift", "_update_hyps_and_scores_if_eos_token",
                 "_fill_alived_hyps_with_eos_token", "_compute_scores_and_next_inp_tokens"]
        self.originals = {n: getattr(searcher, n) for n in names}
        searcher.search_step = self._search_step
        searcher._check_attn_shift = self._check_attn_shift
        searcher._update_hyps_and_scores_if_eos_token = self._update_eos
        searcher._fill_alived_hyps_with_eos_token = self._fill
        searcher._compute_scores_and_next_inp_tokens = self._topk

    def remove(self):
        for n in self.originals:
            delattr(self.searcher, n)

    def _search_step(self, *args, **kwargs):
        self.step += 1
        return self.originals["search_step"](*args, **kwargs)

    def _check_attn_shift(self, attn, prev_attn_peak):
        cond, peak = self.originals["_check_attn_shift"](attn, prev_attn_peak)
        alive = cond.view(-1, self.searcher.beam_size).sum(-1).tolist()
        if any(a < self.searcher.beam_size for a in alive):
            self.blocked.append({"step": self.step, "unblocked": [int(a) for a in alive]})
        return cond, peak

    def _update_eos(self, inp_tokens, alived_hyps, eos_lists, scores):
        before = [len(lst) for lst in eos_lists]
        out = self.originals["_update_hyps_and_scores_if_eos_token"](
            inp_tokens, alived_hyps, eos_lists, scores)
        for b, lst in enumerate(eos_lists):
            for hyp, _, score in lst[before[b]:]:
                self.entries.setdefault(b, []).append({
                    "source": "fill" if self.in_fill else "eos", "step": self.step,
                    "score": float(score), "seq": [int(t) for t in hyp]})
        return out

    def _topk(self, alived_hyps, log_probs, step):
        """How far the last kept candidate is from the first dropped one (as SB ranks them)."""
        sr = self.searcher
        scores = alived_hyps.sequence_scores.unsqueeze(1) + log_probs
        if sr.length_normalization:
            scores = scores / (step + 1)
        top = scores.view(sr.batch_size, -1).topk(sr.beam_size + 1, dim=-1).values
        self.gaps.append([float(t[-2] - t[-1]) if t[-1] > -1e19 else None for t in top])
        return self.originals["_compute_scores_and_next_inp_tokens"](alived_hyps, log_probs, step)

    def _fill(self, *args, **kwargs):
        self.in_fill = True
        try:
            return self.originals["_fill_alived_hyps_with_eos_token"](*args, **kwargs)
        finally:
            self.in_fill = False

    def summary(self, b):
        """Where utterance b's winning hypothesis came from (the highest final score)."""
        entries = self.entries[b]
        best = max(entries, key=lambda e: e["score"])
        scores = sorted((e["score"] for e in entries), reverse=True)
        fully = [x["step"] for x in self.blocked if x["unblocked"][b] == 0]
        if fully:
            raise SystemExit(f"beam search blocked every hypothesis at steps {fully}: the "
                             "result would depend on torch.topk's order among ties")
        return {
            "steps": self.step + 1,
            "end": best["source"], "end_step": best["step"], "score": best["score"],
            "score_margin": scores[0] - scores[1] if len(scores) > 1 else None,
            "collected": {"eos": sum(e["source"] == "eos" for e in entries),
                          "fill": sum(e["source"] == "fill" for e in entries)},
            # the winner's full sequence, including the token SB cuts off (EOS or, for "fill",
            # the last real token)
            "raw_seq": best["seq"],
            # the smallest score gap, over the steps, between the last hypothesis kept and the
            # best one dropped (how close SB came to keeping another one)
            "min_topk_gap": min(g[b] for g in self.gaps if g[b] is not None),
            "attn_shift_blocked": [{"step": x["step"], "unblocked": x["unblocked"][b]}
                                   for x in self.blocked if x["unblocked"][b] < self.searcher.beam_size],
        }


def traced(searcher, run):
    """Runs `run()` with `searcher` instrumented; returns (run's result, BeamTrace)."""
    trace = BeamTrace(searcher)
    try:
        return run(), trace
    finally:
        trace.remove()


def asr(out):
    from speechbrain.inference.ASR import EncoderDecoderASR

    torch.manual_seed(SEED)
    out = os.path.join(out, "asr")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):  # start clean, but keep the hand-written README
        if name != "README.md":
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    paths = make_wavs(out)
    wavs = [read_wav(p) for p in paths]
    model_dir = os.path.join(out, "model")
    write_model_dir(model_dir, wavs)

    tmp = tempfile.mkdtemp(prefix="asr_sb_")
    try:
        model = EncoderDecoderASR.from_hparams(source=model_dir, savedir=tmp)
        manifest = fixtures_with(model, out, wavs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    official = official_shapes()
    save_json(os.path.join(out, "official_shapes.json"), official)
    manifest["params_official"] = {"asr": official["asr_params"], "lm": official["lm_params"]}
    manifest["files"] = files_index(out)
    save_json(os.path.join(out, "expected.json"), manifest)
    print(f"asr: greedy min margins {[u['greedy_min_margin'] for u in manifest['utterances']]}")


def files_index(out):
    """Every generated file under `out` (but the manifest): .npy dtype/shape, .wav format."""
    index = {}
    for root, _, names in os.walk(out):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, out)
            if rel in ("expected.json", "README.md"):
                continue
            entry = {"bytes": os.path.getsize(path)}
            if name.endswith(".npy"):
                a = np.load(path)
                entry.update(dtype=str(a.dtype), shape=list(a.shape))
            elif name.endswith(".wav"):
                info = sf.info(path)
                entry.update(sample_rate=info.samplerate, frames=info.frames, subtype=info.subtype)
            index[rel] = entry
    return index


def fixtures_with(model, out, wavs):
    import speechbrain

    model.eval()
    h = model.hparams
    tok = model.tokenizer
    one = torch.tensor([1.0])
    nolm = nolm_searcher(model)
    manifest = {
        "speechbrain_version": speechbrain.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "seed": SEED,
        "model_dir": "model",
        "settings": {
            "vocab_size": VOCAB, "bos_index": h.bos_index, "eos_index": h.eos_index,
            "beam_size": h.beam_size, "lm_weight": h.lm_weight,
            "coverage_penalty": h.coverage_penalty, "temperature": h.temperature,
            "temperature_lm": h.temperature_lm, "eos_threshold": h.eos_threshold,
            "using_max_attn_shift": h.using_max_attn_shift, "max_attn_shift": h.max_attn_shift,
            "min_decode_ratio": h.min_decode_ratio, "max_decode_ratio": h.max_decode_ratio,
            "wav_lens": [1.0],
        },
        "params": {"asr": param_count(h.asr_model), "lm": param_count(h.lm_model)},
        "utterances": [],
    }

    with torch.no_grad():
        # RNNLM logits on a fixed token batch (before any beam search has used the LM).
        lm_tokens = [[0, 5, 9, 3, 7]]
        logits, _ = h.lm_model(torch.tensor(lm_tokens))
        save_npy(os.path.join(out, "lm_logits.npy"), logits.numpy())
        manifest["lm"] = {"tokens": lm_tokens, "file": "lm_logits.npy", "shape": list(logits.shape)}

        for i, w in enumerate(wavs):
            x = w.unsqueeze(0)
            enc_mod = model.mods.encoder
            f = enc_mod.normalize(enc_mod.compute_features(x), one)
            enc = model.encode_batch(x, one)
            save_npy(os.path.join(out, f"feats_{i}.npy"), f.numpy())
            save_npy(os.path.join(out, f"enc_{i}.npy"), enc.numpy())
            g, margin, g_steps = greedy(model, enc)
            if not margin > 1e-3:
                raise SystemExit(f"utt {i}: greedy top-1/top-2 margin {margin} <= 1e-3")
            (words, toks), tr = traced(model.mods.decoder, lambda: model.transcribe_batch(x, one))
            beam = [int(t) for t in toks[0]]
            (hyps, _, nolm_scores, _), tr_nolm = traced(nolm, lambda: nolm(enc, one))
            nolm_toks = [int(t) for t in hyps[0]]
            summary, summary_nolm = tr.summary(0), tr_nolm.summary(0)
            assert beam == summary["raw_seq"][:-1] and nolm_toks == summary_nolm["raw_seq"][:-1]
            assert abs(float(nolm_scores[0]) - summary_nolm["score"]) < 1e-6
            manifest["utterances"].append({
                "wav": f"utt_{i}.wav", "text_spoken": UTTERANCES[i][1], "samples": int(len(w)),
                "feats": f"feats_{i}.npy", "feats_shape": list(f.shape),
                "enc": f"enc_{i}.npy", "enc_shape": list(enc.shape),
                "greedy": g, "greedy_steps": g_steps, "greedy_min_margin": margin,
                "beam": beam, "beam_text": words[0], "beam_search": summary,
                "beam_nolm": nolm_toks, "beam_nolm_text": tok.decode_ids(nolm_toks),
                "beam_nolm_search": summary_nolm,
            })
            if len(set(g)) < 3:
                raise SystemExit(f"utt {i}: greedy sequence not varied: {g}")

        # Utterances 0 and 1 as one zero-padded batch with relative lengths.
        n = max(len(wavs[0]), len(wavs[1]))
        batch = torch.zeros(2, n)
        batch[0, : len(wavs[0])] = wavs[0]
        batch[1, : len(wavs[1])] = wavs[1]
        lens = torch.tensor([len(wavs[0]) / n, len(wavs[1]) / n])
        (words, toks), tr = traced(model.mods.decoder, lambda: model.transcribe_batch(batch, lens))
        enc = model.encode_batch(batch, lens)
        manifest["batch01"] = {
            "utterances": [0, 1], "wav_lens": [float(v) for v in lens],
            "enc_shape": list(enc.shape),
            "enc_lens": [int(v) for v in torch.round(enc.shape[1] * lens).int()],
            "tokens": [[int(t) for t in s] for s in toks], "texts": list(words),
            "beam_search": [tr.summary(0), tr.summary(1)],
        }

    # Tokenizer round trips ('#' and 'Ü' are not in the training text -> unk id 0).
    samples = ["THE BIRCH CANOE SLID", "IT'S A QUIET EVENING", "HELLO #1 ÜBER WORLD"]
    decode = [[5, 12, 0, 30, 7], [int(t) for t in range(1, VOCAB, 5)]]
    manifest["tokenizer"] = {
        "vocab_size": tok.get_piece_size(),
        "pieces": [tok.id_to_piece(i) for i in range(tok.get_piece_size())],
        "encode": [{"text": s, "ids": tok.encode_as_ids(s), "pieces": tok.encode_as_pieces(s)}
                   for s in samples],
        "decode": [{"ids": ids, "text": tok.decode_ids(ids)} for ids in decode],
    }
    return manifest
