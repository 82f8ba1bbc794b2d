//! Word and character error rates, computed exactly like SpeechBrain 1.1.2
//! (`speechbrain.utils.edit_distance`, `speechbrain.utils.metric_stats.ErrorRateStats` and the
//! report printers of `speechbrain.dataio.wer`).
//!
//! The pieces, from the bottom up:
//!
//! - [`op_table`] solves the Levenshtein table of edit operations between a reference and a
//!   hypothesis, breaking ties the way SpeechBrain (and Kaldi's `compute-wer`) does:
//!   **insertion, then deletion, then substitution** — a substitution (or a match) is taken
//!   only when it is strictly cheaper than both alternatives. This decides *which* alignment
//!   is returned when several have the same cost: `a b` → `b c` aligns as `D = I`, not `S S`.
//! - [`alignment`] and [`count_ops`] walk the table back from its last cell.
//! - [`wer_details_by_utterance`] / [`wer_details_for_batch`] give per-utterance
//!   [`UtteranceDetails`], and [`wer_summary`] the corpus totals ([`WerSummary`]).
//! - [`ErrorRateStats`] accumulates batches (`split_tokens` turns word sequences into
//!   character sequences, for CER) and writes SpeechBrain's text report
//!   ([`write_wer_summary`] followed by [`write_alignments`]).
//!
//! # Empty references
//!
//! SpeechBrain scores a reference as having **zero tokens** when it is empty *or when its first
//! token is the empty string* (`ref_tokens[0] == ""`, meant for `"".split(" ") == [""]`). The
//! edit operations are still computed on the tokens as given, so `[""]` against `["a"]` is one
//! substitution over 0 reference tokens, and `["", "a", "b"]` against `["a", "b"]` is one
//! deletion over 0 reference tokens. An utterance's WER divides by `max(1, num_ref_tokens)`
//! (an empty reference with two inserted words has a WER of 200%), while the corpus WER of
//! [`wer_summary`] is 0 when no reference tokens were scored at all. Here a token counts as
//! "the empty string" when its [`Display`] output is empty (for `String`/`&str` that is exactly
//! `== ""`; a `char` or an integer is never empty).
//!
//! The sentence error rate divides by the number of scored utterances; SpeechBrain raises
//! `ZeroDivisionError` when there are none, here [`WerSummary::ser`] is NaN (printed `nan`).

use std::fmt::{self, Display, Write as _};
use std::io::{self, Write};

use indexmap::IndexMap;

/// One edit operation of an [`op_table`] or an [`alignment`] (SpeechBrain's `EDIT_SYMBOLS`).
///
/// ```
/// use voxbrain::metrics::wer::EditOp;
/// assert_eq!(EditOp::Substitution.symbol(), "S");
/// assert_eq!(EditOp::Equal.to_string(), "=");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EditOp {
    /// The tokens are equal (`"="`).
    Equal,
    /// A hypothesis token with no reference counterpart (`"I"`).
    Insertion,
    /// A reference token with no hypothesis counterpart (`"D"`).
    Deletion,
    /// Different tokens aligned together (`"S"`).
    Substitution,
}

impl EditOp {
    /// SpeechBrain's symbol: `"="`, `"I"`, `"D"` or `"S"`.
    ///
    /// ```
    /// use voxbrain::metrics::wer::EditOp;
    /// assert_eq!(EditOp::Insertion.symbol(), "I");
    /// assert_eq!(EditOp::Deletion.symbol(), "D");
    /// ```
    pub fn symbol(self) -> &'static str {
        match self {
            EditOp::Equal => "=",
            EditOp::Insertion => "I",
            EditOp::Deletion => "D",
            EditOp::Substitution => "S",
        }
    }

    /// The operation for a SpeechBrain symbol (`"="`, `"I"`, `"D"`, `"S"`), if it is one.
    ///
    /// ```
    /// use voxbrain::metrics::wer::EditOp;
    /// assert_eq!(EditOp::from_symbol("D"), Some(EditOp::Deletion));
    /// assert_eq!(EditOp::from_symbol("x"), None);
    /// ```
    pub fn from_symbol(symbol: &str) -> Option<EditOp> {
        match symbol {
            "=" => Some(EditOp::Equal),
            "I" => Some(EditOp::Insertion),
            "D" => Some(EditOp::Deletion),
            "S" => Some(EditOp::Substitution),
            _ => None,
        }
    }
}

impl Display for EditOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// One step of an [`alignment`]: the operation, the reference index and the hypothesis index
/// (`None` where a token is aligned to nothing), as SpeechBrain's `(op, i, j)` tuples.
pub type AlignmentStep = (EditOp, Option<usize>, Option<usize>);

/// Table of edit operations between `a` (reference) and `b` (hypothesis), of size
/// `(a.len() + 1) × (b.len() + 1)`, tokens compared with `==`. See [`op_table_by`].
///
/// ```
/// use voxbrain::metrics::wer::{op_table, EditOp::*};
/// let table = op_table(&[1, 2, 3], &[1, 2, 4]);
/// assert_eq!(table[0], [Equal, Insertion, Insertion, Insertion]);
/// assert_eq!(table[3], [Deletion, Deletion, Deletion, Substitution]);
/// ```
pub fn op_table<T: PartialEq>(a: &[T], b: &[T]) -> Vec<Vec<EditOp>> {
    op_table_by(a, b, |x, y| x == y)
}

/// [`op_table`] with a custom token equality (SpeechBrain's `equality_comparator`).
///
/// Cell `(i, j)` holds the last operation of the chosen shortest edit path from `a[..i]` to
/// `b[..j]`; row 0 is all insertions and column 0 all deletions (cell `(0, 0)` is `Equal`).
/// Ties are broken like SpeechBrain and Kaldi: the diagonal move (match or substitution) is
/// taken only when strictly cheaper than both insertion and deletion, then deletion when
/// strictly cheaper than insertion, else insertion.
///
/// ```
/// use voxbrain::metrics::wer::{alignment, op_table_by, EditOp::*};
/// let table = op_table_by(&["The", "cat"], &["the", "cat"], |a, b| a.eq_ignore_ascii_case(b));
/// assert_eq!(alignment(&table), [(Equal, Some(0), Some(0)), (Equal, Some(1), Some(1))]);
/// ```
pub fn op_table_by<A, B, F>(a: &[A], b: &[B], mut equal: F) -> Vec<Vec<EditOp>>
where
    F: FnMut(&A, &B) -> bool,
{
    let mut prev_row: Vec<usize> = (0..=b.len()).collect();
    let mut curr_row = vec![0usize; b.len() + 1];
    let mut table = vec![vec![EditOp::Equal; b.len() + 1]; a.len() + 1];
    for row in table.iter_mut() {
        row[0] = EditOp::Deletion;
    }
    for cell in table[0].iter_mut() {
        *cell = EditOp::Insertion;
    }
    table[0][0] = EditOp::Equal;
    for (i, a_token) in a.iter().enumerate() {
        let i = i + 1;
        curr_row[0] += 1;
        for (j, b_token) in b.iter().enumerate() {
            let j = j + 1;
            let insertion_cost = curr_row[j - 1] + 1;
            let deletion_cost = prev_row[j] + 1;
            let substitution = usize::from(!equal(a_token, b_token));
            let substitution_cost = prev_row[j - 1] + substitution;
            if substitution_cost < insertion_cost && substitution_cost < deletion_cost {
                curr_row[j] = substitution_cost;
                if substitution == 1 {
                    table[i][j] = EditOp::Substitution;
                }
            } else if deletion_cost < insertion_cost {
                curr_row[j] = deletion_cost;
                table[i][j] = EditOp::Deletion;
            } else {
                curr_row[j] = insertion_cost;
                table[i][j] = EditOp::Insertion;
            }
        }
        prev_row.copy_from_slice(&curr_row);
    }
    table
}

/// Walks an [`op_table`] back from its last cell (first row: insertions, first column:
/// deletions) and calls `step` with each operation, last one first, and the indices it consumes.
fn walk_back(table: &[Vec<EditOp>], mut step: impl FnMut(EditOp, Option<usize>, Option<usize>)) {
    let Some(first) = table.first() else {
        return;
    };
    let mut i = table.len() - 1;
    let mut j = first.len().saturating_sub(1);
    while !(i == 0 && j == 0) {
        let op = if i == 0 {
            EditOp::Insertion
        } else if j == 0 {
            EditOp::Deletion
        } else {
            table[i][j]
        };
        match op {
            EditOp::Insertion => {
                j -= 1;
                step(op, None, Some(j));
            }
            EditOp::Deletion => {
                i -= 1;
                step(op, Some(i), None);
            }
            EditOp::Substitution | EditOp::Equal => {
                i -= 1;
                j -= 1;
                step(op, Some(i), Some(j));
            }
        }
    }
}

/// The alignment of `a` to `b` encoded in an [`op_table`]: SpeechBrain's list of
/// `(op, i, j)`, `i` indexing the reference and `j` the hypothesis (`None`: aligned to nothing).
///
/// ```
/// use voxbrain::metrics::wer::{alignment, op_table, EditOp::*};
/// let table = op_table(&["a", "b"], &["b", "c"]);
/// // Insertion and deletion win ties against substitution: not `S S`.
/// assert_eq!(
///     alignment(&table),
///     [(Deletion, Some(0), None), (Equal, Some(1), Some(0)), (Insertion, None, Some(1))]
/// );
/// ```
pub fn alignment(table: &[Vec<EditOp>]) -> Vec<AlignmentStep> {
    let mut steps = Vec::new();
    walk_back(table, |op, i, j| steps.push((op, i, j)));
    steps.reverse();
    steps
}

/// Numbers of insertions, deletions and substitutions of an edit path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EditCounts {
    /// Hypothesis tokens with no reference counterpart.
    pub insertions: usize,
    /// Reference tokens with no hypothesis counterpart.
    pub deletions: usize,
    /// Reference tokens aligned to a different hypothesis token.
    pub substitutions: usize,
}

impl EditCounts {
    /// Total number of edits.
    ///
    /// ```
    /// use voxbrain::metrics::wer::EditCounts;
    /// let c = EditCounts { insertions: 1, deletions: 2, substitutions: 3 };
    /// assert_eq!(c.total(), 6);
    /// ```
    pub fn total(&self) -> usize {
        self.insertions + self.deletions + self.substitutions
    }
}

/// Counts the edit operations on the path of an [`op_table`] (SpeechBrain's `count_ops`).
///
/// ```
/// use voxbrain::metrics::wer::{count_ops, op_table};
/// let counts = count_ops(&op_table(&["a", "b", "c"], &["a", "x", "c", "d"]));
/// assert_eq!((counts.insertions, counts.deletions, counts.substitutions), (1, 0, 1));
/// ```
pub fn count_ops(table: &[Vec<EditOp>]) -> EditCounts {
    let mut counts = EditCounts::default();
    walk_back(table, |op, _, _| match op {
        EditOp::Insertion => counts.insertions += 1,
        EditOp::Deletion => counts.deletions += 1,
        EditOp::Substitution => counts.substitutions += 1,
        EditOp::Equal => {}
    });
    counts
}

/// Per-utterance error details (one entry of SpeechBrain's `wer_details_by_utterance`).
///
/// Utterances that were not scored (a missing hypothesis in [`ScoringMode::Present`]) have
/// `scored == false`; SpeechBrain stores `None` in their score fields, here `hyp_empty` is
/// `false`, the counts are 0 and `wer` is NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct UtteranceDetails<T> {
    /// Utterance id.
    pub key: String,
    /// Whether the utterance was scored.
    pub scored: bool,
    /// Whether no hypothesis was found for it.
    pub hyp_absent: bool,
    /// Whether the hypothesis was empty (or absent and scored as empty).
    pub hyp_empty: bool,
    /// Total number of edits.
    pub num_edits: usize,
    /// Reference tokens; 0 when the first reference token is the empty string (see the
    /// [module documentation](self)). For an unscored utterance: the reference length.
    pub num_ref_tokens: usize,
    /// `100 * num_edits / max(1, num_ref_tokens)`.
    pub wer: f64,
    /// Number of insertions.
    pub insertions: usize,
    /// Number of deletions.
    pub deletions: usize,
    /// Number of substitutions.
    pub substitutions: usize,
    /// The alignment, when computed (scored utterances with `compute_alignments`).
    pub alignment: Option<Vec<AlignmentStep>>,
    /// The reference tokens, kept when alignments are computed.
    pub ref_tokens: Option<Vec<T>>,
    /// The hypothesis tokens, kept when alignments are computed and the utterance is scored.
    pub hyp_tokens: Option<Vec<T>>,
}

/// How [`wer_details_by_utterance`] treats a reference whose hypothesis is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScoringMode {
    /// A missing hypothesis is an error ([`MissingHypothesis`]).
    #[default]
    Strict,
    /// A missing hypothesis is scored as empty.
    All,
    /// Only utterances with a hypothesis are scored.
    Present,
}

/// A reference utterance had no hypothesis in [`ScoringMode::Strict`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Key {key} in reference but missing in hypothesis and strict mode on.")]
pub struct MissingHypothesis {
    /// The utterance id.
    pub key: String,
}

/// Whether a token prints as the empty string (SpeechBrain's `ref_tokens[0] == ""`), without
/// allocating.
fn displays_empty<T: Display>(token: &T) -> bool {
    struct Probe(bool);
    impl fmt::Write for Probe {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            if s.is_empty() {
                Ok(())
            } else {
                self.0 = true;
                Err(fmt::Error)
            }
        }
    }
    let mut probe = Probe(false);
    let _ = write!(probe, "{token}");
    !probe.0
}

/// Scores one present (or, in [`ScoringMode::All`], absent-as-empty) utterance.
fn score_utterance<T, F>(
    key: &str,
    ref_tokens: &[T],
    hyp_tokens: &[T],
    hyp_absent: bool,
    compute_alignments: bool,
    equal: F,
) -> UtteranceDetails<T>
where
    T: Clone + Display,
    F: FnMut(&T, &T) -> bool,
{
    let table = op_table_by(ref_tokens, hyp_tokens, equal);
    let ops = count_ops(&table);
    let num_ref_tokens = match ref_tokens.first() {
        None => 0,
        Some(first) if displays_empty(first) => 0,
        Some(_) => ref_tokens.len(),
    };
    let num_edits = ops.total();
    UtteranceDetails {
        key: key.to_string(),
        scored: true,
        hyp_absent,
        hyp_empty: hyp_tokens.is_empty(),
        num_edits,
        num_ref_tokens,
        wer: 100.0 * num_edits as f64 / num_ref_tokens.max(1) as f64,
        insertions: ops.insertions,
        deletions: ops.deletions,
        substitutions: ops.substitutions,
        alignment: compute_alignments.then(|| alignment(&table)),
        ref_tokens: compute_alignments.then(|| ref_tokens.to_vec()),
        hyp_tokens: compute_alignments.then(|| hyp_tokens.to_vec()),
    }
}

/// Python's `dict(pairs)` over keys: each distinct key once, at its first position, with the
/// index of its last occurrence.
fn dict_positions<'a, K: AsRef<str> + 'a>(
    keys: impl IntoIterator<Item = &'a K>,
) -> IndexMap<&'a str, usize> {
    let mut map = IndexMap::new();
    for (index, key) in keys.into_iter().enumerate() {
        map.insert(key.as_ref(), index);
    }
    map
}

/// Per-utterance error details for references and hypotheses keyed by utterance id
/// (SpeechBrain's `wer_details_by_utterance`), one entry per distinct reference id, in order.
///
/// `refs` and `hyps` behave like the Python dicts they stand for: a repeated id keeps its
/// first position and its last tokens. `equal` compares tokens (SpeechBrain's
/// `equality_comparator`; pass `|a, b| a == b` for the default). With `compute_alignments`,
/// each scored entry also holds its alignment and tokens (needed by [`write_alignments`]).
///
/// # Errors
///
/// [`MissingHypothesis`] in [`ScoringMode::Strict`] when a reference id has no hypothesis.
///
/// ```
/// use voxbrain::metrics::wer::{wer_details_by_utterance, wer_summary, ScoringMode};
/// let refs = [("u1", vec!["a", "b"]), ("u2", vec!["c"])];
/// let hyps = [("u1", vec!["a", "x"])];
/// let details =
///     wer_details_by_utterance(&refs, &hyps, false, ScoringMode::All, |a, b| a == b).unwrap();
/// assert_eq!(details[0].wer, 50.0);
/// assert!(details[1].hyp_absent && details[1].hyp_empty);
/// assert_eq!(wer_summary(&details).wer, 200.0 / 3.0);
/// assert!(wer_details_by_utterance(&refs, &hyps, false, ScoringMode::Strict, |a, b| a == b)
///     .is_err());
/// ```
pub fn wer_details_by_utterance<T, K, R, H, F>(
    refs: &[(K, R)],
    hyps: &[(K, H)],
    compute_alignments: bool,
    scoring_mode: ScoringMode,
    mut equal: F,
) -> Result<Vec<UtteranceDetails<T>>, MissingHypothesis>
where
    T: Clone + Display,
    K: AsRef<str>,
    R: AsRef<[T]>,
    H: AsRef<[T]>,
    F: FnMut(&T, &T) -> bool,
{
    let ref_dict = dict_positions(refs.iter().map(|(k, _)| k));
    let hyp_dict = dict_positions(hyps.iter().map(|(k, _)| k));
    let mut details = Vec::with_capacity(ref_dict.len());
    for (&key, &r) in &ref_dict {
        let ref_tokens = refs[r].1.as_ref();
        let (hyp_tokens, hyp_absent): (&[T], bool) = match hyp_dict.get(key) {
            Some(&h) => (hyps[h].1.as_ref(), false),
            None => match scoring_mode {
                ScoringMode::All => (&[], true),
                ScoringMode::Present => {
                    details.push(UtteranceDetails {
                        key: key.to_string(),
                        scored: false,
                        hyp_absent: true,
                        hyp_empty: false,
                        num_edits: 0,
                        num_ref_tokens: ref_tokens.len(),
                        wer: f64::NAN,
                        insertions: 0,
                        deletions: 0,
                        substitutions: 0,
                        alignment: None,
                        ref_tokens: compute_alignments.then(|| ref_tokens.to_vec()),
                        hyp_tokens: None,
                    });
                    continue;
                }
                ScoringMode::Strict => {
                    return Err(MissingHypothesis {
                        key: key.to_string(),
                    })
                }
            },
        };
        details.push(score_utterance(
            key,
            ref_tokens,
            hyp_tokens,
            hyp_absent,
            compute_alignments,
            &mut equal,
        ));
    }
    Ok(details)
}

/// Per-utterance details of one batch (SpeechBrain's `wer_details_for_batch`): `ids[k]`,
/// `refs[k]` and `hyps[k]` belong together. Like SpeechBrain, which zips them into dicts, a
/// repeated id is scored once, at its first position, with its last sequences.
///
/// # Panics
///
/// When the three slices have different lengths.
///
/// ```
/// use voxbrain::metrics::wer::wer_details_for_batch;
/// let details = wer_details_for_batch(
///     &["utt1", "utt2"],
///     &[vec!["a", "b", "c"], vec!["d", "e"]],
///     &[vec!["a", "b", "d"], vec!["d", "e"]],
///     true,
/// );
/// assert_eq!(format!("{:.2}", details[0].wer), "33.33");
/// assert_eq!(details[1].num_edits, 0);
/// ```
pub fn wer_details_for_batch<T, I, R, H>(
    ids: &[I],
    refs: &[R],
    hyps: &[H],
    compute_alignments: bool,
) -> Vec<UtteranceDetails<T>>
where
    T: PartialEq + Clone + Display,
    I: AsRef<str>,
    R: AsRef<[T]>,
    H: AsRef<[T]>,
{
    batch_details(ids, refs, hyps, compute_alignments, |a: &T, b: &T| a == b)
}

fn batch_details<T, I, R, H, F>(
    ids: &[I],
    refs: &[R],
    hyps: &[H],
    compute_alignments: bool,
    mut equal: F,
) -> Vec<UtteranceDetails<T>>
where
    T: Clone + Display,
    I: AsRef<str>,
    R: AsRef<[T]>,
    H: AsRef<[T]>,
    F: FnMut(&T, &T) -> bool,
{
    assert!(
        ids.len() == refs.len() && refs.len() == hyps.len(),
        "wer: {} ids, {} references and {} hypotheses in one batch",
        ids.len(),
        refs.len(),
        hyps.len()
    );
    dict_positions(ids)
        .into_iter()
        .map(|(key, k)| {
            score_utterance(
                key,
                refs[k].as_ref(),
                hyps[k].as_ref(),
                false,
                compute_alignments,
                &mut equal,
            )
        })
        .collect()
}

/// Corpus-level error statistics (SpeechBrain's `wer_summary`, plus the `error_rate` key that
/// `ErrorRateStats.summarize` adds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WerSummary {
    /// `100 * num_edits / num_scored_tokens`, 0 when no reference tokens were scored.
    pub wer: f64,
    /// Sentence error rate: `100 * num_erroneous_sents / num_scored_sents` (NaN when no
    /// utterance was scored; SpeechBrain raises `ZeroDivisionError`).
    pub ser: f64,
    /// Total number of edits.
    pub num_edits: usize,
    /// Reference tokens of the scored utterances.
    pub num_scored_tokens: usize,
    /// Scored utterances with at least one edit.
    pub num_erroneous_sents: usize,
    /// Scored utterances.
    pub num_scored_sents: usize,
    /// Utterances whose hypothesis was missing.
    pub num_absent_sents: usize,
    /// All reference utterances.
    pub num_ref_sents: usize,
    /// Total insertions.
    pub insertions: usize,
    /// Total deletions.
    pub deletions: usize,
    /// Total substitutions.
    pub substitutions: usize,
    /// The generic name of the rate (`ErrorRateStats`'s `error_rate`): always equal to `wer`.
    pub error_rate: f64,
}

/// Corpus totals over per-utterance details (SpeechBrain's `wer_summary`).
///
/// ```
/// use voxbrain::metrics::wer::{wer_details_for_batch, wer_summary};
/// let details = wer_details_for_batch(
///     &["u1", "u2"],
///     &[vec!["a", "b"], vec!["c", "d"]],
///     &[vec!["a", "b"], vec!["c"]],
///     false,
/// );
/// let s = wer_summary(&details);
/// assert_eq!((s.wer, s.ser, s.num_edits, s.deletions), (25.0, 50.0, 1, 1));
/// ```
pub fn wer_summary<T>(details_by_utterance: &[UtteranceDetails<T>]) -> WerSummary {
    let mut s = WerSummary {
        wer: 0.0,
        ser: 0.0,
        num_edits: 0,
        num_scored_tokens: 0,
        num_erroneous_sents: 0,
        num_scored_sents: 0,
        num_absent_sents: 0,
        num_ref_sents: 0,
        insertions: 0,
        deletions: 0,
        substitutions: 0,
        error_rate: 0.0,
    };
    for d in details_by_utterance {
        s.num_ref_sents += 1;
        if d.scored {
            s.num_scored_sents += 1;
            s.num_scored_tokens += d.num_ref_tokens;
            s.insertions += d.insertions;
            s.deletions += d.deletions;
            s.substitutions += d.substitutions;
            s.num_edits += d.num_edits;
            if d.num_edits > 0 {
                s.num_erroneous_sents += 1;
            }
        }
        if d.hyp_absent {
            s.num_absent_sents += 1;
        }
    }
    if s.num_scored_tokens != 0 {
        s.wer = 100.0 * s.num_edits as f64 / s.num_scored_tokens as f64;
    }
    s.ser = if s.num_scored_sents == 0 {
        f64::NAN
    } else {
        100.0 * s.num_erroneous_sents as f64 / s.num_scored_sents as f64
    };
    s.error_rate = s.wer;
    s
}

/// Python's `"{:.2f}".format(x)` (Rust's `{:.2}` rounds the same way; only NaN differs).
fn fmt2(x: f64) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else {
        format!("{x:.2}")
    }
}

/// Writes the summary lines of SpeechBrain's report (`print_wer_summary`, after Kaldi's
/// `compute-wer`): `%WER`, with ` [PARTIAL]` when some references were not scored, `%SER`
/// and the number of scored sentences.
///
/// ```
/// use voxbrain::metrics::wer::{wer_details_for_batch, wer_summary, write_wer_summary};
/// let details = wer_details_for_batch(&["u1"], &[vec!["a", "b"]], &[vec!["a", "c", "d"]], false);
/// let mut out = Vec::new();
/// write_wer_summary(&mut out, &wer_summary(&details)).unwrap();
/// assert_eq!(
///     String::from_utf8(out).unwrap(),
///     "%WER 100.00 [ 2 / 2, 1 ins, 0 del, 1 sub ]\n\
///      %SER 100.00 [ 1 / 1 ]\n\
///      Scored 1 sentences, 0 not present in hyp.\n"
/// );
/// ```
pub fn write_wer_summary<W: Write>(mut w: W, summary: &WerSummary) -> io::Result<()> {
    let partial = if summary.num_scored_sents < summary.num_ref_sents {
        " [PARTIAL]"
    } else {
        ""
    };
    writeln!(
        w,
        "%WER {} [ {} / {}, {} ins, {} del, {} sub ]{partial}",
        fmt2(summary.wer),
        summary.num_edits,
        summary.num_scored_tokens,
        summary.insertions,
        summary.deletions,
        summary.substitutions
    )?;
    writeln!(
        w,
        "%SER {} [ {} / {} ]",
        fmt2(summary.ser),
        summary.num_erroneous_sents,
        summary.num_scored_sents
    )?;
    writeln!(
        w,
        "Scored {} sentences, {} not present in hyp.",
        summary.num_scored_sents, summary.num_absent_sents
    )
}

/// Options of [`write_alignments`] (the keyword arguments of SpeechBrain's `print_alignments`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignmentStyle {
    /// Printed for a token aligned to nothing (default `<eps>`).
    pub empty_symbol: String,
    /// Between columns (default `" ; "`).
    pub separator: String,
    /// Whether to print the global format header and each utterance's header (default true).
    pub print_header: bool,
    /// A line printed after each utterance, when set and non-empty (default none).
    pub sample_separator: Option<String>,
}

impl Default for AlignmentStyle {
    fn default() -> Self {
        AlignmentStyle {
            empty_symbol: "<eps>".to_string(),
            separator: " ; ".to_string(),
            print_header: true,
            sample_separator: None,
        }
    }
}

/// Python's `str.center(width)`: the length is counted in code points, and an odd margin puts
/// its extra space on the left when `width` is odd, on the right otherwise.
fn center(s: &str, width: usize) -> String {
    let len = s.chars().count();
    if len >= width {
        return s.to_string();
    }
    let margin = width - len;
    let left = margin / 2 + (margin & width & 1);
    let mut out = String::with_capacity(s.len() + margin);
    out.extend(std::iter::repeat_n(' ', left));
    out.push_str(s);
    out.extend(std::iter::repeat_n(' ', margin - left));
    out
}

/// Three lines: the reference, the operations and the hypothesis, each column centred on the
/// widest of its three strings (SpeechBrain's `_print_alignment`).
fn write_alignment<W: Write, A: Display, B: Display>(
    w: &mut W,
    steps: &[AlignmentStep],
    a: &[A],
    b: &[B],
    style: &AlignmentStyle,
) -> io::Result<()> {
    let mut a_padded = Vec::with_capacity(steps.len());
    let mut ops_padded = Vec::with_capacity(steps.len());
    let mut b_padded = Vec::with_capacity(steps.len());
    for &(op, i, j) in steps {
        let op_string = op.symbol();
        let a_string = i.map_or_else(|| style.empty_symbol.clone(), |i| a[i].to_string());
        let b_string = j.map_or_else(|| style.empty_symbol.clone(), |j| b[j].to_string());
        let width = [op_string, &a_string, &b_string]
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0);
        a_padded.push(center(&a_string, width));
        b_padded.push(center(&b_string, width));
        ops_padded.push(center(op_string, width));
    }
    writeln!(w, "{}", a_padded.join(&style.separator))?;
    writeln!(w, "{}", ops_padded.join(&style.separator))?;
    writeln!(w, "{}", b_padded.join(&style.separator))
}

/// Writes the alignments part of SpeechBrain's report (`print_alignments`): a global header
/// explaining the format, then for every scored utterance a `<id>, %WER …` header and its
/// alignment as three centred lines (reference, operations, hypothesis).
///
/// The details need their alignments (`compute_alignments`); a scored utterance without one
/// gets its header only (SpeechBrain fails there).
///
/// ```
/// use voxbrain::metrics::wer::{wer_details_for_batch, write_alignments, AlignmentStyle};
/// let details = wer_details_for_batch(&["u1"], &[vec!["a", "bb"]], &[vec!["a"]], true);
/// let style = AlignmentStyle { print_header: false, ..AlignmentStyle::default() };
/// let mut out = Vec::new();
/// write_alignments(&mut out, &details, &style).unwrap();
/// // Python's `str.center`: "bb" in 5 columns is "  bb ", "D" is "  D  ".
/// assert_eq!(String::from_utf8(out).unwrap(), "a ;   bb \n= ;   D  \na ; <eps>\n");
/// ```
pub fn write_alignments<W: Write, T: Display>(
    mut w: W,
    details_by_utterance: &[UtteranceDetails<T>],
    style: &AlignmentStyle,
) -> io::Result<()> {
    if style.print_header {
        write_global_header(&mut w, style)?;
    }
    for d in details_by_utterance.iter().filter(|d| d.scored) {
        if style.print_header {
            writeln!(w, "{}", "=".repeat(80))?;
            writeln!(
                w,
                "{}, %WER {} [ {} / {}, {} ins, {} del, {} sub ]",
                d.key,
                fmt2(d.wer),
                d.num_edits,
                d.num_ref_tokens,
                d.insertions,
                d.deletions,
                d.substitutions
            )?;
        }
        if let (Some(steps), Some(a), Some(b)) = (&d.alignment, &d.ref_tokens, &d.hyp_tokens) {
            write_alignment(&mut w, steps, a, b, style)?;
        }
        if let Some(sep) = style.sample_separator.as_deref().filter(|s| !s.is_empty()) {
            writeln!(w, "{sep}")?;
        }
    }
    Ok(())
}

fn write_global_header<W: Write>(w: &mut W, style: &AlignmentStyle) -> io::Result<()> {
    writeln!(w, "{}", "=".repeat(80))?;
    writeln!(w, "ALIGNMENTS")?;
    writeln!(w)?;
    writeln!(w, "Format:")?;
    writeln!(w, "<utterance-id>, WER DETAILS")?;
    let a = ["reference", "on", "the", "first", "line"];
    let b = ["and", "hypothesis", "on", "the", "third"];
    let steps = [
        (EditOp::Insertion, None, Some(0)),
        (EditOp::Substitution, Some(0), Some(1)),
        (EditOp::Equal, Some(1), Some(2)),
        (EditOp::Equal, Some(2), Some(3)),
        (EditOp::Substitution, Some(3), Some(4)),
        (EditOp::Deletion, Some(4), None),
    ];
    write_alignment(w, &steps, &a, &b, style)
}

/// SpeechBrain's `split_word`: the tokens' text joined by `space`, then split into characters.
fn split_word<T: Display + From<char>>(tokens: &[T], space: &str) -> Vec<T> {
    let mut joined = String::new();
    for (k, token) in tokens.iter().enumerate() {
        if k > 0 {
            joined.push_str(space);
        }
        let _ = write!(joined, "{token}");
    }
    joined.chars().map(T::from).collect()
}

/// Token splitting of an [`ErrorRateStats`] (`split_tokens=True`).
#[derive(Debug, Clone)]
struct Splitter<T> {
    space_token: String,
    split: fn(&[T], &str) -> Vec<T>,
}

/// Accumulates error rates over batches, like SpeechBrain's `ErrorRateStats`: append batches
/// of `(id, hypothesis, reference)`, then [`summarize`](Self::summarize) or
/// [`write_stats`](Self::write_stats).
///
/// Tokens are any `T: PartialEq + Clone + Display` (words as `&str`/`String`, characters,
/// token ids). For a character error rate over word sequences, build it with
/// [`with_split_tokens`](Self::with_split_tokens) (SpeechBrain's `split_tokens=True`): each
/// sequence's words are joined by the space token (`"_"` by default) and split into characters.
///
/// ```
/// use voxbrain::metrics::wer::ErrorRateStats;
/// let mut wer = ErrorRateStats::new();
/// wer.append(&["utt1"], &[vec!["a", "b", "b"]], &[vec!["a", "b", "a"]]);
/// let s = wer.summarize();
/// assert_eq!(format!("{:.2}", s.wer), "33.33");
/// assert_eq!((s.insertions, s.deletions, s.substitutions), (0, 0, 1));
///
/// let mut cer = ErrorRateStats::<String>::with_split_tokens(true, "_");
/// let hyp = vec!["ab".to_string(), "c".to_string()];
/// let target = vec!["ab".to_string(), "d".to_string()];
/// cer.append(&["utt1"], &[hyp], &[target]);
/// assert_eq!(cer.summarize().num_scored_tokens, 4); // a b _ d
///
/// let mut report = Vec::new();
/// cer.write_stats(&mut report).unwrap();
/// assert!(String::from_utf8(report).unwrap().starts_with("%WER 25.00 [ 1 / 4, 0 ins, 0 del, 1 sub ]\n"));
/// ```
#[derive(Debug, Clone)]
pub struct ErrorRateStats<T> {
    ids: Vec<String>,
    scores: Vec<UtteranceDetails<T>>,
    summary: Option<WerSummary>,
    splitter: Option<Splitter<T>>,
    equal: fn(&T, &T) -> bool,
}

impl<T: PartialEq + Clone + Display> Default for ErrorRateStats<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: PartialEq + Clone + Display + From<char>> ErrorRateStats<T> {
    /// An accumulator with SpeechBrain's `split_tokens` and `space_token` options: with
    /// `split_tokens`, each appended sequence is joined with `space_token` between its tokens
    /// and split into characters before scoring (a character error rate).
    ///
    /// ```
    /// use voxbrain::metrics::wer::ErrorRateStats;
    /// let mut cer = ErrorRateStats::<char>::with_split_tokens(true, " ");
    /// // "h i" against "h o": one substitution in three characters.
    /// cer.append(&["u"], &[vec!['h', 'i']], &[vec!['h', 'o']]);
    /// assert_eq!(format!("{:.2}", cer.summarize().wer), "33.33");
    /// assert!(cer.split_tokens());
    /// ```
    pub fn with_split_tokens(split_tokens: bool, space_token: &str) -> Self {
        let mut stats = Self::new();
        if split_tokens {
            stats.splitter = Some(Splitter {
                space_token: space_token.to_string(),
                split: split_word::<T>,
            });
        }
        stats
    }
}

impl<T: PartialEq + Clone + Display> ErrorRateStats<T> {
    /// An empty accumulator that scores tokens as given, compared with `==`.
    ///
    /// ```
    /// let stats = voxbrain::metrics::wer::ErrorRateStats::<String>::new();
    /// assert!(stats.scores().is_empty());
    /// ```
    pub fn new() -> Self {
        ErrorRateStats {
            ids: Vec::new(),
            scores: Vec::new(),
            summary: None,
            splitter: None,
            equal: |a, b| a == b,
        }
    }

    /// Replaces token equality (SpeechBrain's `equality_comparator`).
    ///
    /// ```
    /// use voxbrain::metrics::wer::ErrorRateStats;
    /// let mut stats = ErrorRateStats::<&str>::new()
    ///     .equality_comparator(|a, b| a.eq_ignore_ascii_case(b));
    /// stats.append(&["u"], &[vec!["HELLO"]], &[vec!["hello"]]);
    /// assert_eq!(stats.summarize().num_edits, 0);
    /// ```
    pub fn equality_comparator(mut self, equal: fn(&T, &T) -> bool) -> Self {
        self.equal = equal;
        self
    }

    /// Whether sequences are split into characters (see
    /// [`with_split_tokens`](Self::with_split_tokens)).
    ///
    /// ```
    /// assert!(!voxbrain::metrics::wer::ErrorRateStats::<String>::new().split_tokens());
    /// ```
    pub fn split_tokens(&self) -> bool {
        self.splitter.is_some()
    }

    /// Scores a batch: `predictions[k]` (hypothesis) against `targets[k]` (reference), for
    /// utterance `ids[k]`. Alignments are always kept, for [`write_stats`](Self::write_stats).
    ///
    /// As in SpeechBrain, an id repeated within one batch is scored once (first position, last
    /// sequences), while ids repeated across batches are separate entries.
    ///
    /// # Panics
    ///
    /// When the three slices have different lengths.
    ///
    /// ```
    /// use voxbrain::metrics::wer::ErrorRateStats;
    /// let mut stats = ErrorRateStats::new();
    /// stats.append(&["u1", "u2"], &[vec![1, 2], vec![3]], &[vec![1, 2], vec![4]]);
    /// assert_eq!(stats.scores().len(), 2);
    /// assert_eq!(stats.summarize().ser, 50.0);
    /// ```
    pub fn append<I, P, R>(&mut self, ids: &[I], predictions: &[P], targets: &[R])
    where
        I: AsRef<str>,
        P: AsRef<[T]>,
        R: AsRef<[T]>,
    {
        self.ids
            .extend(ids.iter().map(|id| id.as_ref().to_string()));
        let scores = match &self.splitter {
            Some(splitter) => batch_details(
                ids,
                &split_all(targets, splitter),
                &split_all(predictions, splitter),
                true,
                self.equal,
            ),
            None => batch_details(ids, targets, predictions, true, self.equal),
        };
        self.scores.extend(scores);
    }

    /// Corpus totals over everything appended so far (SpeechBrain's `summarize()`); the result
    /// is also kept for [`write_stats`](Self::write_stats).
    ///
    /// ```
    /// use voxbrain::metrics::wer::ErrorRateStats;
    /// let mut stats = ErrorRateStats::new();
    /// stats.append(&["u1"], &[vec!["a"]], &[vec!["a", "b"]]);
    /// let s = stats.summarize();
    /// assert_eq!((s.wer, s.error_rate, s.deletions), (50.0, 50.0, 1));
    /// ```
    pub fn summarize(&mut self) -> WerSummary {
        let summary = wer_summary(&self.scores);
        self.summary = Some(summary);
        summary
    }

    /// Writes SpeechBrain's report: the summary lines ([`write_wer_summary`]) and every
    /// utterance's alignment ([`write_alignments`] with the default style).
    ///
    /// Like SpeechBrain, the summary is the one of the last [`summarize`](Self::summarize)
    /// call, if there was one — batches appended after it show in the alignments but not in
    /// the `%WER` line — and is computed now otherwise.
    ///
    /// ```
    /// use voxbrain::metrics::wer::ErrorRateStats;
    /// let mut stats = ErrorRateStats::new();
    /// stats.append(&["utt1"], &[vec!["hello", "word"]], &[vec!["hello", "world"]]);
    /// let mut out = Vec::new();
    /// stats.write_stats(&mut out).unwrap();
    /// let text = String::from_utf8(out).unwrap();
    /// assert!(text.starts_with("%WER 50.00 [ 1 / 2, 0 ins, 0 del, 1 sub ]\n"));
    /// assert!(text.ends_with("hello ; world\n  =   ;   S  \nhello ;  word\n"));
    /// ```
    pub fn write_stats<W: Write>(&mut self, mut w: W) -> io::Result<()> {
        let summary = match self.summary {
            Some(s) => s,
            None => self.summarize(),
        };
        write_wer_summary(&mut w, &summary)?;
        write_alignments(&mut w, &self.scores, &AlignmentStyle::default())
    }

    /// The per-utterance details appended so far (SpeechBrain's `scores`).
    ///
    /// ```
    /// use voxbrain::metrics::wer::ErrorRateStats;
    /// let mut stats = ErrorRateStats::new();
    /// stats.append(&["u1"], &[vec!["a", "c"]], &[vec!["a", "b"]]);
    /// assert_eq!(stats.scores()[0].substitutions, 1);
    /// ```
    pub fn scores(&self) -> &[UtteranceDetails<T>] {
        &self.scores
    }

    /// Every id appended so far, repeats included (SpeechBrain's `ids`).
    ///
    /// ```
    /// use voxbrain::metrics::wer::ErrorRateStats;
    /// let mut stats = ErrorRateStats::new();
    /// stats.append(&["u1", "u1"], &[vec!["a"], vec!["b"]], &[vec!["a"], vec!["b"]]);
    /// assert_eq!(stats.ids(), ["u1", "u1"]);
    /// assert_eq!(stats.scores().len(), 1);
    /// ```
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Forgets everything appended and the last summary; the options stay.
    ///
    /// ```
    /// use voxbrain::metrics::wer::ErrorRateStats;
    /// let mut stats = ErrorRateStats::new();
    /// stats.append(&["u1"], &[vec!["a"]], &[vec!["a"]]);
    /// stats.clear();
    /// assert!(stats.scores().is_empty() && stats.ids().is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.ids.clear();
        self.scores.clear();
        self.summary = None;
    }
}

fn split_all<T, S: AsRef<[T]>>(seqs: &[S], splitter: &Splitter<T>) -> Vec<Vec<T>> {
    seqs.iter()
        .map(|seq| (splitter.split)(seq.as_ref(), &splitter.space_token))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_matches_python() {
        // Python: "ab".center(3) == " ab", "ab".center(5) == "  ab ", "a".center(4) == " a  "
        assert_eq!(center("ab", 3), " ab");
        assert_eq!(center("ab", 5), "  ab ");
        assert_eq!(center("a", 4), " a  ");
        assert_eq!(center("", 1), " ");
        assert_eq!(center("日本", 3), " 日本");
        assert_eq!(center("abc", 2), "abc");
    }

    #[test]
    fn empty_summary_has_nan_ser() {
        let mut stats = ErrorRateStats::<String>::new();
        let s = stats.summarize();
        assert_eq!(s.wer, 0.0);
        assert!(s.ser.is_nan());
        let mut out = Vec::new();
        stats.write_stats(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("%WER 0.00 [ 0 / 0, 0 ins, 0 del, 0 sub ]\n%SER nan [ 0 / 0 ]\n"));
    }

    #[test]
    fn empty_string_detection() {
        assert!(displays_empty(&""));
        assert!(displays_empty(&String::new()));
        assert!(!displays_empty(&"a"));
        assert!(!displays_empty(&'a'));
        assert!(!displays_empty(&0));
    }
}
