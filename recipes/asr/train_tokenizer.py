"""SentencePiece unigram tokenizer of the ASR recipe, as SpeechBrain's LibriSpeech tokenizer
recipe trains it (unigram, <unk> = 0 shared with blank/bos/eos, no bos/eos/pad pieces), on the
training transcripts upper-cased as LibriSpeech's.

    python train_tokenizer.py TRAIN_TEXT VOCAB_SIZE OUT_MODEL
"""
import io
import os
import sys

import sentencepiece as spm


def main():
    text, vocab, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(text, encoding="utf-8") as f:
        lines = [l.strip().upper() for l in f if l.strip()]
    model = io.BytesIO()
    # From an iterator into a buffer: the model then holds no file paths and is reproducible.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="unigram",
        vocab_size=vocab, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        character_coverage=1.0, add_dummy_prefix=True, num_threads=1, minloglevel=2,
    )
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.getvalue())
    os.replace(tmp, out)
    print(f"{out}: {vocab} pieces from {len(lines)} sentences")


if __name__ == "__main__":
    main()
