"""WER/CER fixtures: SpeechBrain's edit-distance tables, alignments, op counts, per-utterance
details, corpus summaries and `ErrorRateStats.write_stats` reports, for the Rust parity test
(tests/metrics_wer.rs).

Writes tests/fixtures/wer/expected.json with
- "pairs": tricky (reference, hypothesis) token lists (empty sides, all insertions/deletions,
  repeated words, S-vs-I+D ties, unicode, "" tokens, integers, characters) with SpeechBrain's
  `op_table`, `alignment`, `count_ops` and `wer_details_by_utterance` entry for each;
- "stats": ErrorRateStats runs (batches of ids/predictions/targets, `split_tokens` on or off,
  duplicate ids in a batch) with `summarize()` and the `write_stats` text;
- "by_utterance": `wer_details_by_utterance` with missing hypotheses in "all" and "present"
  scoring modes, with `wer_summary` and the `print_wer_summary` + `print_alignments` text.

Nothing here needs audio or torch: it runs in seconds.
"""

import io
import os

from common import save_json


def _words(s):
    return s.split()


# (name, ref tokens, hyp tokens, comparator). Tokens are lists: words, characters or ints.
PAIRS = [
    ("identical", _words("the cat sat on the mat"), _words("the cat sat on the mat"), None),
    ("one_substitution", _words("the cat sat"), _words("the bat sat"), None),
    ("empty_hyp", _words("a b c"), [], None),
    ("empty_ref", [], _words("a b"), None),
    ("both_empty", [], [], None),
    # SpeechBrain counts a reference whose FIRST token is "" as empty (num_ref_tokens 0).
    ("ref_empty_string", [""], ["a"], None),
    ("ref_empty_string_first", ["", "a", "b"], ["a", "b"], None),
    ("ref_empty_string_last", ["a", ""], ["a"], None),
    ("hyp_empty_string", ["a"], [""], None),
    ("all_insertions", ["a"], _words("x a y z"), None),
    ("all_deletions", _words("one two three four"), ["three"], None),
    ("repeated_words", _words("the the the cat"), _words("the cat the the"), None),
    ("repeated_deletion", _words("a a a"), _words("a a"), None),
    ("repeated_insertion", _words("a a"), _words("a a a"), None),
    ("tie_sub_vs_ins_del", _words("a b"), _words("b c"), None),
    ("reversed", _words("a b c"), _words("c b a"), None),
    ("transposition", _words("a b"), _words("b a"), None),
    ("shifted", _words("a b c d e"), _words("x a b c d e f"), None),
    ("case_sensitive", _words("The Cat"), _words("the cat"), None),
    ("case_insensitive_comparator", _words("The Cat sat"), _words("the cat SAT on"), "lowercase"),
    ("unicode_words", _words("naïve café 日本語 über"), _words("naive café 日本 über alles"), None),
    ("centering_widths", _words("ab abcd x abc"), _words("abcde a xy"), None),
    ("punctuation", ["hello,", "world!", "it's"], ["hello", "world!", "its", "."], None),
    ("chars_kitten", list("kitten"), list("sitting"), None),
    ("chars_composed_vs_decomposed", list("caf\u00e9 ok"), list("cafe\u0301 ok"), None),
    ("chars_cjk", list("日本語を話す"), list("日本後話すよ"), None),
    ("ints", [1, 2, 3, 4, 5], [1, 3, 4, 4, 6, 5], None),
    (
        "long_sentence",
        _words("it is easy to tell the depth of a well these days a chicken leg is a rare dish"),
        _words("it easy to tell the the death of well these day a chicken lag is rare dish dish"),
        None,
    ),
]


def _lower_eq(a, b):
    return a.lower() == b.lower()


def _details_json(d):
    out = {}
    for k, v in d.items():
        if k == "alignment" and v is not None:
            v = [[op, i, j] for op, i, j in v]
        elif k in ("ref_tokens", "hyp_tokens") and v is not None:
            v = list(v)
        out[k] = v
    return out


def _pairs():
    from speechbrain.utils import edit_distance as ed

    cases = []
    for name, ref, hyp, comparator in PAIRS:
        eq = _lower_eq if comparator == "lowercase" else ed._str_equals
        table = ed.op_table(ref, hyp, equality_comparator=eq)
        ops = ed.count_ops(table)
        details = ed.wer_details_by_utterance(
            {name: ref}, {name: hyp}, compute_alignments=True, equality_comparator=eq
        )
        assert len(details) == 1
        cases.append(
            {
                "name": name,
                "ref": ref,
                "hyp": hyp,
                "comparator": comparator,
                "op_table": table,
                "alignment": [[op, i, j] for op, i, j in ed.alignment(table)],
                "count_ops": {
                    "insertions": ops["insertions"],
                    "deletions": ops["deletions"],
                    "substitutions": ops["substitutions"],
                },
                "details": _details_json(details[0]),
            }
        )
    return cases


def _batch(names, prefix=""):
    by_name = {name: (ref, hyp) for name, ref, hyp, c in PAIRS if c is None}
    return {
        "ids": [prefix + n for n in names],
        "predictions": [by_name[n][1] for n in names],
        "targets": [by_name[n][0] for n in names],
    }


# ErrorRateStats runs: constructor kwargs, the batches appended, in order, and the index of
# the batch after which summarize() is called (None: not before write_stats).
STATS = [
    (
        "words",
        {},
        [
            _batch(["identical", "one_substitution", "empty_hyp", "empty_ref"]),
            _batch(["ref_empty_string", "ref_empty_string_first", "all_insertions"]),
            _batch(["repeated_words", "tie_sub_vs_ins_del", "unicode_words", "centering_widths"]),
            _batch(["long_sentence", "punctuation", "shifted"]),
        ],
        None,
    ),
    (
        "chars_split_tokens",
        {"split_tokens": True},
        [
            _batch(["identical", "one_substitution", "empty_hyp", "empty_ref"]),
            _batch(["unicode_words", "ref_empty_string_last", "hyp_empty_string", "both_empty"]),
        ],
        None,
    ),
    (
        "chars_split_tokens_space",
        {"split_tokens": True, "space_token": " "},
        [_batch(["long_sentence", "case_sensitive", "repeated_words"])],
        None,
    ),
    (
        "all_correct",
        {},
        [_batch(["identical"]), _batch(["identical", "both_empty"], prefix="again_")],
        None,
    ),
    (
        # One batch with a repeated id: SpeechBrain zips ids and sequences into dicts, so the
        # repeated id is scored once (first position, last sequences).
        "duplicate_ids",
        {},
        [
            {
                "ids": ["u1", "u2", "u1", "u3"],
                "predictions": [["a"], ["b", "c"], ["x", "y"], []],
                "targets": [["a"], ["b"], ["x"], ["z"]],
            },
            # Across batches, ids are independent entries.
            {"ids": ["u1"], "predictions": [["q"]], "targets": [["q", "r"]]},
        ],
        None,
    ),
    (
        # write_stats reuses the summary of an earlier summarize(): the %WER lines miss the
        # second batch while the alignments show it.
        "stale_summary",
        {},
        [_batch(["one_substitution"]), _batch(["empty_hyp", "all_insertions"])],
        0,
    ),
]


def _stats():
    from speechbrain.utils.metric_stats import ErrorRateStats

    runs = []
    for name, kwargs, batches, summarize_after in STATS:
        stats = ErrorRateStats(**kwargs)
        for k, b in enumerate(batches):
            stats.append(ids=b["ids"], predict=b["predictions"], target=b["targets"])
            if k == summarize_after:
                stats.summarize()
        buf = io.StringIO()
        stats.write_stats(buf)
        summary = dict(stats.summarize())
        runs.append(
            {
                "name": name,
                "split_tokens": kwargs.get("split_tokens", False),
                "space_token": kwargs.get("space_token", "_"),
                "batches": batches,
                "summarize_after": summarize_after,
                "summary": summary,
                "details": [_details_json(d) for d in stats.scores],
                "report": buf.getvalue(),
            }
        )
    return runs


def _by_utterance():
    from speechbrain.dataio.wer import print_alignments, print_wer_summary
    from speechbrain.utils import edit_distance as ed

    refs = [
        ("s1", _words("the cat sat")),
        ("s2", _words("a b c")),
        ("s3", _words("hello world")),
        ("s4", []),
    ]
    hyps = [("s1", _words("the cat sat")), ("s3", _words("hello word")), ("s4", ["extra"])]
    runs = []
    for mode in ("all", "present"):
        details = ed.wer_details_by_utterance(
            dict(refs), dict(hyps), compute_alignments=True, scoring_mode=mode
        )
        summary = ed.wer_summary(details)
        buf = io.StringIO()
        print_wer_summary(summary, buf)
        print_alignments(details, buf)
        runs.append(
            {
                "scoring_mode": mode,
                "refs": [[k, v] for k, v in refs],
                "hyps": [[k, v] for k, v in hyps],
                "details": [_details_json(d) for d in details],
                "summary": summary,
                "report": buf.getvalue(),
            }
        )
    return runs


def wer(out):
    """WER/CER parity fixtures (tests/fixtures/wer/expected.json)."""
    import speechbrain

    path = os.path.join(out, "wer", "expected.json")
    save_json(
        path,
        {
            "speechbrain_version": speechbrain.__version__,
            "pairs": _pairs(),
            "stats": _stats(),
            "by_utterance": _by_utterance(),
        },
    )


if __name__ == "__main__":
    wer(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures"))
