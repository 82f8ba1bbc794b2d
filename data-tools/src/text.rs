//! `voxbrain-data text`: a sentence corpus for training, from WordNet's usage examples.
//!
//! WordNet 3.0 (Princeton; Debian's `wordnet-base`, `/usr/share/wordnet`) quotes about 48,000
//! short usage examples in its glosses ("she was able to program her computer"), under a
//! permissive licence (use, copy, modify and distribute, keeping its notice). They are varied
//! everyday English, which is what an ASR recipe needs and what the 16 Harvard sentences are not.
//!
//! The examples are cleaned to LibriSpeech's transcript style, kept at 5-14 words, and
//! de-duplicated. The speech corpus keeps only the sentences whose words are all among the
//! `vocab` most frequent ones (a closed vocabulary a small model can learn in an hour); the
//! language-model text keeps every sentence except the held-out ones. Held-out (`valid`,
//! `test`) sentences never appear in `train.txt` or `lm.txt`. Seeded: the same options give
//! the same files.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::flac::write_atomic;

/// Settings of [`build`].
#[derive(Debug, Clone)]
pub struct TextOptions {
    /// WordNet's database folder (holds `data.noun`, `data.verb`, `data.adj`, `data.adv`).
    pub wordnet: PathBuf,
    /// Output folder: `train.txt`, `valid.txt`, `test.txt`, `lm.txt`, `LICENSE.wordnet`.
    pub out: PathBuf,
    /// Size of the closed vocabulary of the speech sentences.
    pub vocab: usize,
    /// Held-out validation sentences.
    pub valid: usize,
    /// Held-out test sentences.
    pub test: usize,
    /// Shortest and longest sentence, in words.
    pub min_words: usize,
    /// See `min_words`.
    pub max_words: usize,
    /// Seed of the shuffle and split.
    pub seed: u64,
}

/// Line counts of what [`build`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSummary {
    /// Sentences in `train.txt`, `valid.txt`, `test.txt`, `lm.txt`.
    pub train: usize,
    /// See `train`.
    pub valid: usize,
    /// See `train`.
    pub test: usize,
    /// See `train`.
    pub lm: usize,
    /// Distinct words of the speech sentences.
    pub words: usize,
}

/// The quoted usage examples of one WordNet `data.*` file's text (the gloss is after `|`;
/// header lines start with two spaces).
pub fn wordnet_examples(data: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in data.lines() {
        if line.starts_with("  ") {
            continue;
        }
        let Some((_, gloss)) = line.split_once('|') else {
            continue;
        };
        // Quotes come in pairs: every odd piece is an example.
        out.extend(gloss.split('"').skip(1).step_by(2).map(str::to_string));
    }
    out
}

/// One example in transcript style (lower case words, apostrophes kept), or `None` when it
/// holds anything but letters, apostrophes, spaces and plain punctuation (digits, symbols,
/// foreign letters: espeak-ng would say them in ways the words do not show).
pub fn clean_sentence(example: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_alphabetic() || " ',.!?;:-".contains(c);
    if !example.chars().all(ok) {
        return None;
    }
    let words: Vec<String> = example
        .split(|c: char| !(c.is_ascii_alphabetic() || c == '\''))
        .map(|w| w.trim_matches('\'').to_ascii_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// Reads WordNet's four data files under `dir`.
pub fn read_wordnet(dir: &Path) -> Result<Vec<String>> {
    let mut all = Vec::new();
    for pos in ["noun", "verb", "adj", "adv"] {
        let path = dir.join(format!("data.{pos}"));
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{}: cannot read WordNet (apt-get install wordnet-base)",
                path.display()
            )
        })?;
        // WordNet's files are Latin-1; the examples kept are ASCII anyway.
        let text: String = bytes.iter().map(|&b| b as char).collect();
        all.extend(wordnet_examples(&text));
    }
    if all.is_empty() {
        bail!("{}: no usage examples found", dir.display());
    }
    Ok(all)
}

/// Splits cleaned, de-duplicated `sentences` (see the module docs).
pub fn split(sentences: &[String], opts: &TextOptions) -> Result<[Vec<String>; 4]> {
    let mut seen = HashSet::new();
    let mut pool: Vec<String> = Vec::new();
    for s in sentences {
        let n = s.split(' ').count();
        if (opts.min_words..=opts.max_words).contains(&n) && seen.insert(s.clone()) {
            pool.push(s.clone());
        }
    }
    pool.sort(); // the input's order must not matter, only the seed
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in &pool {
        for w in s.split(' ') {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let vocab: HashSet<&str> = ranked.iter().take(opts.vocab).map(|w| w.0).collect();
    let mut closed: Vec<String> = pool
        .iter()
        .filter(|s| s.split(' ').all(|w| vocab.contains(w)))
        .cloned()
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    closed.shuffle(&mut rng);
    if closed.len() < opts.valid + opts.test + 1 {
        bail!(
            "only {} sentences within the {} most frequent words: fewer than --valid {} + --test {}",
            closed.len(),
            opts.vocab,
            opts.valid,
            opts.test
        );
    }
    let test: Vec<String> = closed.drain(..opts.test).collect();
    let valid: Vec<String> = closed.drain(..opts.valid).collect();
    let held: HashSet<&String> = test.iter().chain(&valid).collect();
    let mut lm: Vec<String> = pool.iter().filter(|s| !held.contains(s)).cloned().collect();
    lm.shuffle(&mut rng);
    Ok([closed, valid, test, lm])
}

/// Builds the corpus text files (see the module docs).
pub fn build(opts: &TextOptions) -> Result<TextSummary> {
    let raw = read_wordnet(&opts.wordnet)?;
    let cleaned: Vec<String> = raw.iter().filter_map(|e| clean_sentence(e)).collect();
    let [train, valid, test, lm] = split(&cleaned, opts)?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    for (name, lines) in [
        ("train.txt", &train),
        ("valid.txt", &valid),
        ("test.txt", &test),
        ("lm.txt", &lm),
    ] {
        let mut text = lines.join("\n");
        text.push('\n');
        write_atomic(&opts.out.join(name), text.as_bytes())?;
    }
    write_atomic(&opts.out.join("LICENSE.wordnet"), WORDNET_NOTICE.as_bytes())?;
    let words: HashSet<&str> = train
        .iter()
        .chain(&valid)
        .chain(&test)
        .flat_map(|s| s.split(' '))
        .collect();
    Ok(TextSummary {
        train: train.len(),
        valid: valid.len(),
        test: test.len(),
        lm: lm.len(),
        words: words.len(),
    })
}

/// WordNet's licence asks that its notice go with every copy, modified ones included.
pub const WORDNET_NOTICE: &str = "The sentences in these files are usage examples from WordNet 3.0,
lower-cased and stripped of punctuation.

WordNet Release 3.0 This software and database is being provided to you, the LICENSEE, by
Princeton University under the following license. By obtaining, using and/or copying this
software and database, you agree that you have read, understood, and will comply with these
terms and conditions.: Permission to use, copy, modify and distribute this software and
database and its documentation for any purpose and without fee or royalty is hereby granted,
provided that you agree to comply with the following copyright notice and statements,
including the disclaimer, and that the same appear on ALL copies of the software, database and
documentation, including modifications that you make for internal use or for distribution.
WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. THIS SOFTWARE AND
DATABASE IS PROVIDED \"AS IS\" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES,
EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON UNIVERSITY MAKES NO
REPRESENTATIONS OR WARRANTIES OF MERCHANT- ABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT
THE USE OF THE LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY
PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS. The name of Princeton University or Princeton
may not be used in advertising or publicity pertaining to distribution of the software and/or
database. Title to copyright in this software, database and any associated documentation shall
at all times remain with Princeton University and LICENSEE agrees to preserve same.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(vocab: usize, valid: usize, test: usize) -> TextOptions {
        TextOptions {
            wordnet: PathBuf::new(),
            out: PathBuf::new(),
            vocab,
            valid,
            test,
            min_words: 3,
            max_words: 6,
            seed: 7,
        }
    }

    #[test]
    fn examples_are_the_quoted_parts_of_glosses() {
        let data = "  1 header line \"not this\"\n\
            00001740 03 n 01 entity 0 | that which is perceived; \"a big dog\"; \"two cats\"\n\
            00001741 03 n 01 thing 0 | no example here\n";
        assert_eq!(wordnet_examples(data), vec!["a big dog", "two cats"]);
    }

    #[test]
    fn cleaning_keeps_words_and_drops_digits_and_symbols() {
        assert_eq!(
            clean_sentence("He's here, isn't he?").as_deref(),
            Some("he's here isn't he")
        );
        assert_eq!(clean_sentence("in 1990 he left"), None);
        assert_eq!(clean_sentence("a café"), None);
        assert_eq!(clean_sentence("  ; "), None);
    }

    #[test]
    fn held_out_sentences_never_reach_training_text() {
        let words = ["a", "b", "c", "d", "e", "f"];
        let mut sentences = Vec::new();
        for i in 0..200usize {
            let n = 3 + i % 4;
            let s: Vec<&str> = (0..n).map(|k| words[(i * 7 + k * 3) % 6]).collect();
            sentences.push(s.join(" "));
        }
        sentences.push("a zebra walks by".into()); // a rare word: out of a 6-word vocabulary
        let [train, valid, test, lm] = split(&sentences, &opts(6, 5, 5)).unwrap();
        assert_eq!((valid.len(), test.len()), (5, 5));
        for s in valid.iter().chain(&test) {
            assert!(!train.contains(s) && !lm.contains(s), "{s} leaked");
        }
        assert!(!train.iter().any(|s| s.contains("zebra")));
        assert!(
            lm.iter().any(|s| s.contains("zebra")),
            "lm keeps rare words"
        );
        let again = split(&sentences, &opts(6, 5, 5)).unwrap();
        assert_eq!(again[2], test, "seeded");
        let err = split(&sentences, &opts(6, 500, 5)).unwrap_err().to_string();
        assert!(err.contains("--valid 500"), "{err}");
    }
}
