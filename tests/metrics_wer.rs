//! Parity with SpeechBrain 1.1.2's WER/CER: `op_table` (tie-breaking), `alignment`,
//! `count_ops`, `wer_details_by_utterance`, `wer_summary`, `ErrorRateStats` (word and
//! `split_tokens` character rates, repeated ids, a summary reused by `write_stats`) and the
//! text report of `write_stats` / `print_wer_summary` + `print_alignments`, line by line.
//! Fixtures: `make_fixtures.py wer` (data-tools/reference/fixtures_wer.py).

mod common;

use std::fmt::Display;

use common::fixture;
use serde_json::Value as Json;
use voxbrain::metrics::wer::{
    alignment, count_ops, op_table, op_table_by, wer_details_by_utterance, wer_summary,
    write_alignments, write_wer_summary, AlignmentStep, AlignmentStyle, EditOp, ErrorRateStats,
    ScoringMode, UtteranceDetails, WerSummary,
};

fn expected() -> Json {
    let text = std::fs::read_to_string(fixture("wer/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A JSON token (string or integer) as its Python `str()`.
fn token_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array().unwrap().iter().map(token_text).collect()
}

fn ints(v: &Json) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn is_int_tokens(v: &Json) -> bool {
    v.as_array().unwrap().iter().any(Json::is_i64)
}

fn index(v: &Json) -> Option<usize> {
    v.as_u64().map(|i| i as usize)
}

fn assert_alignment(ctx: &str, got: &[AlignmentStep], want: &Json) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{ctx}: alignment length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let w = w.as_array().unwrap();
        let op = EditOp::from_symbol(w[0].as_str().unwrap()).unwrap();
        assert_eq!(
            *g,
            (op, index(&w[1]), index(&w[2])),
            "{ctx}: alignment step {k}"
        );
    }
}

fn assert_close(ctx: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9,
        "{ctx}: got {got}, SpeechBrain {want}"
    );
}

fn usize_of(v: &Json) -> usize {
    v.as_u64().unwrap() as usize
}

fn assert_details<T: Display>(ctx: &str, got: &UtteranceDetails<T>, want: &Json) {
    let ctx = format!("{ctx} [{}]", want["key"].as_str().unwrap());
    assert_eq!(got.key, want["key"].as_str().unwrap(), "{ctx}: key");
    assert_eq!(
        got.scored,
        want["scored"].as_bool().unwrap(),
        "{ctx}: scored"
    );
    assert_eq!(
        got.hyp_absent,
        want["hyp_absent"].as_bool().unwrap(),
        "{ctx}: hyp_absent"
    );
    assert_eq!(
        got.num_ref_tokens,
        usize_of(&want["num_ref_tokens"]),
        "{ctx}: num_ref_tokens"
    );
    let tokens = |t: &Option<Vec<T>>| {
        t.as_ref()
            .map(|t| t.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    let want_tokens = |v: &Json| (!v.is_null()).then(|| strings(v));
    assert_eq!(
        tokens(&got.ref_tokens),
        want_tokens(&want["ref_tokens"]),
        "{ctx}: ref_tokens"
    );
    assert_eq!(
        tokens(&got.hyp_tokens),
        want_tokens(&want["hyp_tokens"]),
        "{ctx}: hyp_tokens"
    );
    if !got.scored {
        // SpeechBrain leaves the score fields at None.
        for field in [
            "hyp_empty",
            "num_edits",
            "WER",
            "insertions",
            "deletions",
            "substitutions",
            "alignment",
        ] {
            assert!(want[field].is_null(), "{ctx}: {field} should be None");
        }
        assert!(got.alignment.is_none() && got.wer.is_nan(), "{ctx}");
        return;
    }
    assert_eq!(
        got.hyp_empty,
        want["hyp_empty"].as_bool().unwrap(),
        "{ctx}: hyp_empty"
    );
    for (name, g) in [
        ("num_edits", got.num_edits),
        ("insertions", got.insertions),
        ("deletions", got.deletions),
        ("substitutions", got.substitutions),
    ] {
        assert_eq!(g, usize_of(&want[name]), "{ctx}: {name}");
    }
    assert_close(
        &format!("{ctx}: WER"),
        got.wer,
        want["WER"].as_f64().unwrap(),
    );
    assert_alignment(&ctx, got.alignment.as_ref().unwrap(), &want["alignment"]);
}

fn assert_summary(ctx: &str, got: &WerSummary, want: &Json) {
    assert_close(
        &format!("{ctx}: WER"),
        got.wer,
        want["WER"].as_f64().unwrap(),
    );
    assert_close(
        &format!("{ctx}: SER"),
        got.ser,
        want["SER"].as_f64().unwrap(),
    );
    if let Some(e) = want.get("error_rate") {
        assert_close(
            &format!("{ctx}: error_rate"),
            got.error_rate,
            e.as_f64().unwrap(),
        );
    }
    for (name, g) in [
        ("num_edits", got.num_edits),
        ("num_scored_tokens", got.num_scored_tokens),
        ("num_erroneous_sents", got.num_erroneous_sents),
        ("num_scored_sents", got.num_scored_sents),
        ("num_absent_sents", got.num_absent_sents),
        ("num_ref_sents", got.num_ref_sents),
        ("insertions", got.insertions),
        ("deletions", got.deletions),
        ("substitutions", got.substitutions),
    ] {
        assert_eq!(g, usize_of(&want[name]), "{ctx}: {name}");
    }
}

fn assert_report(ctx: &str, got: &[u8], want: &Json) {
    let got = std::str::from_utf8(got).unwrap();
    let want = want.as_str().unwrap();
    let (g, w): (Vec<&str>, Vec<&str>) = (got.split('\n').collect(), want.split('\n').collect());
    for (k, (gl, wl)) in g.iter().zip(&w).enumerate() {
        assert_eq!(gl, wl, "{ctx}: report line {}", k + 1);
    }
    assert_eq!(g.len(), w.len(), "{ctx}: report line count");
    assert_eq!(got, want, "{ctx}: report");
}

fn check_pair<T>(case: &Json, r: Vec<T>, h: Vec<T>, equal: fn(&T, &T) -> bool)
where
    T: PartialEq + Clone + Display,
{
    let name = case["name"].as_str().unwrap();
    let table = op_table_by(&r, &h, equal);
    // The table, cell by cell.
    let want_table = case["op_table"].as_array().unwrap();
    assert_eq!(table.len(), want_table.len(), "{name}: table rows");
    for (i, (row, want_row)) in table.iter().zip(want_table).enumerate() {
        let want_row: Vec<EditOp> = want_row
            .as_array()
            .unwrap()
            .iter()
            .map(|s| EditOp::from_symbol(s.as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(row, &want_row, "{name}: table row {i}");
    }
    assert_alignment(name, &alignment(&table), &case["alignment"]);
    let counts = count_ops(&table);
    let want = &case["count_ops"];
    assert_eq!(
        (counts.insertions, counts.deletions, counts.substitutions),
        (
            usize_of(&want["insertions"]),
            usize_of(&want["deletions"]),
            usize_of(&want["substitutions"])
        ),
        "{name}: count_ops"
    );
    let details =
        wer_details_by_utterance(&[(name, r)], &[(name, h)], true, ScoringMode::Strict, equal)
            .unwrap();
    assert_eq!(details.len(), 1);
    assert_details(name, &details[0], &case["details"]);
}

#[test]
fn pairs_match_speechbrain() {
    let exp = expected();
    assert_eq!(exp["speechbrain_version"], "1.1.2");
    let cases = exp["pairs"].as_array().unwrap();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for case in cases {
        let (r, h) = (&case["ref"], &case["hyp"]);
        if is_int_tokens(r) || is_int_tokens(h) {
            check_pair(case, ints(r), ints(h), |a, b| a == b);
        } else if case["comparator"] == "lowercase" {
            check_pair(case, strings(r), strings(h), |a, b| {
                a.to_lowercase() == b.to_lowercase()
            });
        } else {
            check_pair(case, strings(r), strings(h), |a, b| a == b);
            // The plain `op_table` agrees with the comparator form.
            assert_alignment(
                case["name"].as_str().unwrap(),
                &alignment(&op_table(&strings(r), &strings(h))),
                &case["alignment"],
            );
        }
    }
    eprintln!("{} pairs equal to SpeechBrain's", cases.len());
}

#[test]
fn error_rate_stats_match_speechbrain() {
    let exp = expected();
    let runs = exp["stats"].as_array().unwrap();
    for run in runs {
        let name = run["name"].as_str().unwrap();
        let mut stats = ErrorRateStats::<String>::with_split_tokens(
            run["split_tokens"].as_bool().unwrap(),
            run["space_token"].as_str().unwrap(),
        );
        let summarize_after = run["summarize_after"].as_u64().map(|k| k as usize);
        for (k, batch) in run["batches"].as_array().unwrap().iter().enumerate() {
            let ids = strings(&batch["ids"]);
            let seqs = |v: &Json| -> Vec<Vec<String>> {
                v.as_array().unwrap().iter().map(strings).collect()
            };
            stats.append(&ids, &seqs(&batch["predictions"]), &seqs(&batch["targets"]));
            if summarize_after == Some(k) {
                stats.summarize();
            }
        }
        let mut report = Vec::new();
        stats.write_stats(&mut report).unwrap();
        assert_report(name, &report, &run["report"]);
        let summary = stats.summarize();
        assert_summary(name, &summary, &run["summary"]);
        let want_details = run["details"].as_array().unwrap();
        assert_eq!(stats.scores().len(), want_details.len(), "{name}: entries");
        for (g, w) in stats.scores().iter().zip(want_details) {
            assert_details(name, g, w);
        }
    }
    eprintln!("{} ErrorRateStats runs equal to SpeechBrain's", runs.len());
}

#[test]
fn by_utterance_scoring_modes_match_speechbrain() {
    let exp = expected();
    let runs = exp["by_utterance"].as_array().unwrap();
    for run in runs {
        let mode = match run["scoring_mode"].as_str().unwrap() {
            "all" => ScoringMode::All,
            "present" => ScoringMode::Present,
            other => panic!("mode {other}"),
        };
        let pairs = |v: &Json| -> Vec<(String, Vec<String>)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().to_string(), strings(&p[1])))
                .collect()
        };
        let (refs, hyps) = (pairs(&run["refs"]), pairs(&run["hyps"]));
        let details =
            wer_details_by_utterance(&refs, &hyps, true, mode, |a: &String, b| a == b).unwrap();
        let ctx = format!("{mode:?}");
        let want_details = run["details"].as_array().unwrap();
        assert_eq!(details.len(), want_details.len(), "{ctx}: entries");
        for (g, w) in details.iter().zip(want_details) {
            assert_details(&ctx, g, w);
        }
        let summary = wer_summary(&details);
        assert_summary(&ctx, &summary, &run["summary"]);
        let mut report = Vec::new();
        write_wer_summary(&mut report, &summary).unwrap();
        write_alignments(&mut report, &details, &AlignmentStyle::default()).unwrap();
        assert_report(&ctx, &report, &run["report"]);

        // SpeechBrain's strict mode raises KeyError on the first missing hypothesis.
        let err = wer_details_by_utterance(&refs, &hyps, true, ScoringMode::Strict, |a, b| a == b)
            .unwrap_err();
        assert_eq!(err.key, "s2");
    }
}
