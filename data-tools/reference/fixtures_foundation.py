"""Foundation fixtures: audio reading/resampling, Fbank and InputNormalization."""

import os

import numpy as np
import soundfile as sf
import torch

from common import save_json, save_npy, speech

def sb_load_audio(path, sample_rate):
    """What every SpeechBrain pretrained interface does in `load_audio`."""
    from speechbrain.dataio import audio_io
    from speechbrain.dataio.preprocess import AudioNormalizer

    signal, sr = audio_io.load(path, channels_first=False)
    return AudioNormalizer(sample_rate)(signal, sr)


def foundation(out):
    """Audio reading/resampling, Fbank and InputNormalization fixtures."""
    from speechbrain.dataio.dataio import read_audio
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    torch.manual_seed(0)
    out = os.path.join(out, "foundation")
    os.makedirs(out, exist_ok=True)
    manifest = {"speech": [], "formats": {}, "fbank": {}, "norm": {}}

    # 1. Real-speech inputs at espeak-ng's native 22.05 kHz, loaded as SpeechBrain does.
    signals16 = []
    for i in range(3):
        x, sr = speech(i)
        name = f"speech_{i}.wav"
        sf.write(os.path.join(out, name), x, sr, subtype="PCM_16")
        s16 = sb_load_audio(os.path.join(out, name), 16000)
        save_npy(os.path.join(out, f"speech_{i}_16k.npy"), s16.numpy())
        signals16.append(s16)
        manifest["speech"].append({"file": name, "sample_rate": sr, "samples16k": len(s16)})

    # 2. Fbank: defaults with 40 and 80 mels on each utterance.
    with torch.no_grad():
        for n_mels in (40, 80):
            fb = Fbank(n_mels=n_mels)
            for i, s in enumerate(signals16):
                f = fb(s.unsqueeze(0))[0]
                save_npy(os.path.join(out, f"fbank{n_mels}_speech_{i}.npy"), f.numpy())
        # Deltas + context on a short excerpt.
        fb = Fbank(n_mels=40, deltas=True, context=True)
        f = fb(signals16[0][:8000].unsqueeze(0))[0]
        save_npy(os.path.join(out, "fbank_deltas_context.npy"), f.numpy())
        # Non-default settings at 8 kHz (resampled by SpeechBrain first).
        s8 = sb_load_audio(os.path.join(out, "speech_2.wav"), 8000)
        save_npy(os.path.join(out, "speech_2_8k.npy"), s8.numpy())
        cfg = dict(sample_rate=8000, n_fft=256, n_mels=24, f_min=20, f_max=3800,
                   win_length=32, hop_length=8)
        f = Fbank(**cfg)(s8.unsqueeze(0))[0]
        save_npy(os.path.join(out, "fbank_custom_8k.npy"), f.numpy())
        manifest["fbank"]["custom_8k"] = cfg
        # A padded batch: top_db is taken over the padded utterance.
        n = max(len(signals16[0]), len(signals16[1]))
        batch = torch.zeros(2, n)
        batch[0, : len(signals16[0])] = signals16[0]
        batch[1, : len(signals16[1])] = signals16[1]
        lens = torch.tensor([len(signals16[0]) / n, len(signals16[1]) / n])
        # The padded batch is rebuilt by the tests from speech_0_16k / speech_1_16k.
        save_npy(os.path.join(out, "batch_lens.npy"), lens.numpy())
        feats = Fbank(n_mels=40)(batch)
        save_npy(os.path.join(out, "fbank40_batch.npy"), feats.numpy())

        # 3. InputNormalization, sentence and global (training updates, then eval).
        flens = torch.tensor([1.0, 0.7])
        save_npy(os.path.join(out, "norm_lens.npy"), flens.numpy())
        sent = InputNormalization(norm_type="sentence")
        save_npy(os.path.join(out, "norm_sentence.npy"), sent(feats, flens).numpy())
        batchn = InputNormalization(norm_type="batch")
        save_npy(os.path.join(out, "norm_batch.npy"), batchn(feats, flens).numpy())
        glob = InputNormalization(norm_type="global")
        glob.train()
        g1 = glob(feats, flens, epoch=0)
        feats2 = Fbank(n_mels=40)(signals16[2].unsqueeze(0))
        g2 = glob(feats2, torch.tensor([0.9]), epoch=0)
        glob.eval()
        g3 = glob(feats, flens)
        save_npy(os.path.join(out, "fbank40_speech_2_batch1.npy"), feats2.numpy())
        save_npy(os.path.join(out, "norm_global_train1.npy"), g1.numpy())
        save_npy(os.path.join(out, "norm_global_train2.npy"), g2.numpy())
        save_npy(os.path.join(out, "norm_global_eval.npy"), g3.numpy())
        save_npy(os.path.join(out, "norm_global_mean.npy"), glob.glob_mean.numpy())
        save_npy(os.path.join(out, "norm_global_std.npy"), glob.glob_std.numpy())
        manifest["norm"]["global_count"] = int(glob.count)
        glob._save(os.path.join(out, "normalizer.ckpt"))

    # 4. Audio formats: read_audio output for each encoding of a 0.5 s clip.
    clip = signals16[1][:8000].numpy()
    stereo = np.stack([clip, 0.5 * signals16[0][:8000].numpy()], axis=1)
    formats = {
        "pcm_u8.wav": (clip, 16000, "WAV", "PCM_U8"),
        "pcm_16.wav": (clip, 16000, "WAV", "PCM_16"),
        "pcm_24.wav": (clip, 16000, "WAV", "PCM_24"),
        "pcm_32.wav": (clip, 16000, "WAV", "PCM_32"),
        "float.wav": (clip, 16000, "WAV", "FLOAT"),
        "stereo_24.wav": (stereo, 16000, "WAV", "PCM_24"),
        "pcm_16.flac": (clip, 16000, "FLAC", "PCM_16"),
        "pcm_24.flac": (clip, 16000, "FLAC", "PCM_24"),
        "vorbis.ogg": (clip, 16000, "OGG", "VORBIS"),
        "mp3.mp3": (clip, 16000, "MP3", "MPEG_LAYER_III"),
    }
    for name, (data, sr, fmt, subtype) in formats.items():
        path = os.path.join(out, "formats", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path, data, sr, format=fmt, subtype=subtype)
        got = read_audio(path)
        save_npy(path + ".npy", got.numpy())
        manifest["formats"][name] = {"sample_rate": sr, "shape": list(got.shape)}
    # Resampling inside load_audio: 8 kHz mono and 44.1 kHz stereo, both to 16 kHz.
    for name, sr, data in [
        ("mono_8k.wav", 8000, sb_load_audio(os.path.join(out, "speech_0.wav"), 8000)[:4000].numpy()),
        ("stereo_44k.wav", 44100, np.stack([
            sb_load_audio(os.path.join(out, "speech_0.wav"), 44100)[:22050].numpy(),
            sb_load_audio(os.path.join(out, "speech_1.wav"), 44100)[:22050].numpy()], axis=1)),
    ]:
        path = os.path.join(out, "formats", name)
        sf.write(path, data, sr, subtype="PCM_16")
        got = sb_load_audio(path, 16000)
        save_npy(path + ".load16k.npy", got.numpy())
        manifest["formats"][name] = {"sample_rate": sr, "load16k_len": len(got)}
    save_json(os.path.join(out, "manifest.json"), manifest)
