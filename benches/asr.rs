//! EncoderDecoderASR speed on the small parity fixture (tests/fixtures/asr/model, utt_2.wav,
//! 2.2 s): the encoder, greedy decoding and the yaml's beam search (with LM and coverage).
//! The full-size comparison with SpeechBrain is `data-tools/reference/full_size_asr.sh`, which
//! times both in the same run.

use criterion::{criterion_group, criterion_main, Criterion};
use voxbrain::inference::{DecodingMethod, EncoderDecoderASR};
use voxbrain::pretrained::FromHparamsOptions;

fn bench(c: &mut Criterion) {
    // The fixture yaml's pretrainer names hub paths: the local files must win, offline.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let root = env!("CARGO_MANIFEST_DIR");
    let save = tempfile::tempdir().unwrap();
    let mut m = EncoderDecoderASR::from_hparams(
        &format!("{root}/tests/fixtures/asr/model"),
        &FromHparamsOptions {
            savedir: Some(save.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let wav = m
        .load_audio(format!("{root}/tests/fixtures/asr/utt_2.wav"))
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    c.bench_function("asr_small_encode_2s", |b| {
        b.iter(|| m.encode_batch(&wav, None).unwrap())
    });
    m.decoding = DecodingMethod::Greedy;
    c.bench_function("asr_small_transcribe_greedy_2s", |b| {
        b.iter(|| m.transcribe_batch(&wav, None).unwrap())
    });
    m.decoding = DecodingMethod::BeamSearch;
    c.bench_function("asr_small_transcribe_beam_2s", |b| {
        b.iter(|| m.transcribe_batch(&wav, None).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
