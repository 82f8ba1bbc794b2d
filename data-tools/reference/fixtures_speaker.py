"""Speaker-recognition fixtures: an SB-layout ECAPA-TDNN model directory (official yaml shape,
small channels, seeded random weights with non-trivial BatchNorm statistics) and SpeechBrain's
embeddings, classifications and verification scores on real (espeak-ng) speech.

`make_model_dir(path, size="small"|"full")` is also used by the one-off full-size check."""

import os
import shutil

import numpy as np
import soundfile as sf
import torch

from common import save_json, save_npy, speech

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OFFICIAL = os.path.join(ROOT, "..", "shared", "reference-models", "spkrec-ecapa-voxceleb", "hyperparams.yaml")

SMALL = {"n_mels": 40, "channels": [32, 32, 32, 32, 96], "attention_channels": 16,
         "se_channels": 16, "lin_neurons": 24, "out_n_neurons": 10}


def model_yaml(size):
    """The official hyperparams.yaml, with sizes replaced for the small config."""
    text = open(OFFICIAL).read()
    if size == "full":
        return text
    s = SMALL
    text = text.replace("n_mels: 80", f"n_mels: {s['n_mels']}")
    text = text.replace("out_n_neurons: 7205", f"out_n_neurons: {s['out_n_neurons']}")
    text = text.replace("channels: [1024, 1024, 1024, 1024, 3072]", f"channels: {s['channels']}")
    text = text.replace("attention_channels: 128", f"attention_channels: {s['attention_channels']}\n    se_channels: {s['se_channels']}")
    text = text.replace("lin_neurons: 192", f"lin_neurons: {s['lin_neurons']}")
    text = text.replace("input_size: 192", f"input_size: {s['lin_neurons']}")
    return text


def _randomize(module, gen):
    """Seeded weights with BatchNorm gains/biases and running statistics away from 1/0."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))
            elif name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif name.endswith("num_batches_tracked"):
                b.fill_(1000)


def _calibrate_batchnorm(hp, size):
    """Real running statistics: cumulative averages over speech the tests never see, so the
    random model's embeddings vary with the input (otherwise every cosine score is ~0.99)."""
    model, feats, norm = hp["embedding_model"], hp["compute_features"], hp["mean_var_norm"]
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    texts = ["Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
             "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
             "The source of the huge river is the clear spring.", "Kick the ball straight and follow through."]
    import torchaudio
    wavs = []
    for i in range(4, 10):
        x, sr = speech(i, text=texts[i - 4])
        wavs.append(torchaudio.functional.resample(torch.from_numpy(x), sr, 16000))
    n = max(len(w) for w in wavs)
    batch = torch.zeros(len(wavs), n)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    lens = torch.tensor([len(w) / n for w in wavs])
    with torch.no_grad():
        f = norm(feats(batch), lens)
        model(f, lens)
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.momentum = 0.1


def make_model_dir(path, size="small", seed=0):
    from hyperpyyaml import load_hyperpyyaml

    os.makedirs(path, exist_ok=True)
    text = model_yaml(size)
    with open(os.path.join(path, "hyperparams.yaml"), "w") as f:
        f.write(text)
    hp = load_hyperpyyaml(text)
    gen = torch.Generator().manual_seed(seed)
    _randomize(hp["embedding_model"], gen)
    _calibrate_batchnorm(hp, size)
    torch.save(hp["embedding_model"].state_dict(), os.path.join(path, "embedding_model.ckpt"))
    with torch.no_grad():
        w = hp["classifier"].weight
        w.copy_(torch.randn(w.shape, generator=gen))
    torch.save(hp["classifier"].state_dict(), os.path.join(path, "classifier.ckpt"))
    lin = hp["classifier"].weight.shape[1]
    norm = hp["mean_var_norm_emb"]
    norm.count = 1000
    norm.glob_mean = 0.1 * torch.randn(lin, generator=gen)
    norm.glob_std = torch.ones(1)
    norm._save(os.path.join(path, "mean_var_norm_emb.ckpt"))
    n_out = hp["classifier"].weight.shape[0]
    with open(os.path.join(path, "label_encoder.txt"), "w") as f:
        for i in range(n_out):
            f.write(f"'id{10000 + i}' => {i}\n")
        f.write("================\n'starting_index' => 0\n")
    return path


def speaker(out):
    from speechbrain.inference.speaker import SpeakerRecognition
    from speechbrain.inference.classifiers import EncoderClassifier

    out = os.path.join(out, "speaker")
    model_dir = make_model_dir(os.path.join(out, "model_small"))
    overrides = {"pretrained_path": model_dir}
    tmp = os.path.join(out, "_savedir")
    ver = SpeakerRecognition.from_hparams(source=model_dir, savedir=tmp, overrides=overrides)
    clf = EncoderClassifier.from_hparams(source=model_dir, savedir=tmp, overrides=overrides)
    shutil.rmtree(tmp, ignore_errors=True)

    found = os.path.join(ROOT, "tests", "fixtures", "foundation")
    wavs = [torch.from_numpy(np.load(os.path.join(found, f"speech_{i}_16k.npy"))) for i in range(3)]
    # A fourth, different voice, written as an 8 kHz stereo file (resampled + downmixed on load).
    x3, sr3 = speech(3)
    stereo = np.stack([x3, 0.7 * x3], axis=1)
    import torchaudio
    s8 = torchaudio.functional.resample(torch.from_numpy(stereo.T.copy()), sr3, 8000).T.numpy()
    sf.write(os.path.join(out, "stereo_8k.wav"), s8, 8000, subtype="PCM_16")
    ref = {"singles": [], "verify": {}}
    with torch.no_grad():
        for i, w in enumerate(wavs):
            e = ver.encode_batch(w)
            save_npy(os.path.join(out, f"emb_single_{i}.npy"), e[0, 0].numpy())
            en = ver.encode_batch(w, normalize=True)
            save_npy(os.path.join(out, f"emb_norm_{i}.npy"), en[0, 0].numpy())
            prob, score, index, lab = clf.classify_batch(w.unsqueeze(0))
            ref["singles"].append({"index": int(index[0]), "label": lab[0], "score": float(score[0])})
            save_npy(os.path.join(out, f"cls_prob_{i}.npy"), prob[0].numpy())
        # Variable-length padded batch with relative lengths.
        n = max(len(w) for w in wavs)
        batch = torch.zeros(len(wavs), n)
        for i, w in enumerate(wavs):
            batch[i, : len(w)] = w
        lens = torch.tensor([len(w) / n for w in wavs])
        save_npy(os.path.join(out, "batch_lens.npy"), lens.numpy())
        save_npy(os.path.join(out, "emb_batch.npy"), ver.encode_batch(batch, lens)[:, 0].numpy())
        # verify_files on 22.05 kHz mono files and on the 8 kHz stereo file.
        pairs = {"0-1": ("speech_0.wav", "speech_1.wav"), "0-2": ("speech_0.wav", "speech_2.wav"),
                 "1-2": ("speech_1.wav", "speech_2.wav")}
        for k, (a, b) in pairs.items():
            s, p = ver.verify_files(os.path.join(found, a), os.path.join(found, b))
            ref["verify"][k] = {"score": float(s), "prediction": bool(p)}
        s, p = ver.verify_files(os.path.join(out, "stereo_8k.wav"), os.path.join(found, "speech_0.wav"))
        ref["verify"]["stereo8k-0"] = {"score": float(s), "prediction": bool(p)}
        e = ver.encode_batch(ver.load_audio(os.path.join(out, "stereo_8k.wav")))
        save_npy(os.path.join(out, "emb_stereo_8k.npy"), e[0, 0].numpy())
    save_json(os.path.join(out, "reference.json"), ref)
