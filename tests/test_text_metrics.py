"""Text metrics on hand-checked examples (empty, whitespace, unicode, invalid inputs), and chrF / ROUGE-L /
classification against the reference libraries (sacrebleu and rouge-score compute chrF and ROUGE-L; the checks
against them pin the options and the tokenisation; scikit-learn when installed)."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer
from sacrebleu import metrics

from eval.classification import OTHER, classification_report
from tailor.metrics import (
    all_metrics,
    chrf,
    exact_match_normalized,
    json_schema_valid,
    normalize_answer,
    regex_match,
    rouge_l,
    rouge_tokens,
    token_f1,
)

# ----------------------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("text,expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an   apple\n\tpie ", "apple pie"),
    ("Theatre at the end", "theatre at end"),      # articles only as whole words
    ("don't", "dont"),                              # SQuAD deletes punctuation, it does not split on it
    ("don\u2019t", "dont"),                         # curly apostrophe is punctuation too
    ("\u201cParis\u201d", "paris"),                 # curly quotes
    ("\uff30\uff41\uff52\uff49\uff53", "paris"),    # full-width letters (NFKC)
    ("Stra\u00dfe", "strasse"),                     # case-folding, not just lower()
    ("caf\u00e9", "caf\u00e9"),                     # accents are kept
    ("cafe\u0301", "caf\u00e9"),                    # ... and composed (NFKC)
    ("\u5317\u4eac\u3002", "\u5317\u4eac"),         # CJK full stop
    ("", ""),
    ("the a an", ""),
])
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


# ----------------------------------------------------------------------------------------------- exact match


@pytest.mark.parametrize("prediction,reference,expected", [
    ("The Eiffel Tower!", "eiffel tower", 1.0),
    ("  new\n\tyork ", "New York", 1.0),
    ("An apple.", "apple", 1.0),
    ("Paris", "London", 0.0),
    ("", "Paris", 0.0),
    ("", "", 1.0),
    ("   ", "", 1.0),
    ("\uff30\uff41\uff52\uff49\uff53", "paris", 1.0),
    ("Stra\u00dfe", "STRASSE", 1.0),
    ("caf\u00e9", "cafe", 0.0),
    ("\u5317\u4eac\u3002", "\u5317\u4eac", 1.0),
    ("\u5317 \u4eac", "\u5317\u4eac", 1.0),         # spaces between CJK characters do not matter
    ("42", "forty-two", 0.0),
])
def test_exact_match_normalized(prediction: str, reference: str, expected: float) -> None:
    assert exact_match_normalized(prediction, reference) == expected


# ----------------------------------------------------------------------------------------------- token F1


@pytest.mark.parametrize("prediction,reference,expected", [
    ("the cat sat on the mat", "a cat on a mat", 6 / 7),   # {cat sat on mat} vs {cat on mat}: P=3/4 R=1
    ("x x x y", "x y y", 4 / 7),                           # multiset overlap 2: P=2/4 R=2/3
    ("Paris", "paris!", 1.0),
    ("Paris France", "London", 0.0),
    ("", "", 1.0),
    ("the", "an", 1.0),        # both empty after normalisation
    ("!!!", "", 1.0),
    ("", "Paris", 0.0),
    ("Paris", "", 0.0),
    ("Paris", "the", 0.0),
    ("\u6211\u559c\u6b22\u732b", "\u6211\u559c\u6b22\u72d7", 0.75),   # CJK: character tokens, 3 of 4 shared
    ("caf\u00e9 au lait", "Caf\u00e9 noir", 0.4),                     # P=1/3 R=1/2
])
def test_token_f1(prediction: str, reference: str, expected: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(expected, abs=1e-12)


def test_token_f1_is_symmetric() -> None:
    assert token_f1("a b c d", "b c e") == pytest.approx(token_f1("b c e", "a b c d"))


# ----------------------------------------------------------------------------------------------- ROUGE-L


def _lcs_dp(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, 1):
        for j, y in enumerate(b, 1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_rouge_l_matches_dynamic_programme() -> None:
    rng = random.Random(1234)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        if not a or not b:
            assert rouge_l(" ".join(a), " ".join(b)) == float(a == b)
            continue
        lcs = _lcs_dp(a, b)
        expected = 2 * lcs / (len(a) + len(b))  # F1 of P = lcs/len(a), R = lcs/len(b)
        assert rouge_l(" ".join(a), " ".join(b)) == pytest.approx(expected, abs=1e-12)
        assert rouge_l(" ".join(b), " ".join(a)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("text,expected", [
    ("The cat's mat, 2024!", ["the", "cat", "s", "mat", "2024"]),
    ("snake_case x-y", ["snake", "case", "x", "y"]),
    ("Caf\u00e9 na\u00efve", ["caf\u00e9", "na\u00efve"]),
    ("\u6211\u559c\u6b22 cats", ["\u6211", "\u559c", "\u6b22", "cats"]),
    ("", []),
    (" ... ", []),
])
def test_rouge_tokens(text: str, expected: list[str]) -> None:
    assert rouge_tokens(text) == expected


@pytest.mark.parametrize("prediction,reference,expected", [
    ("the cat sat on the mat", "the cat on the mat", 10 / 11),   # LCS 5: P=5/6 R=1
    ("a b c d", "d c b a", 0.25),                                # LCS 1
    ("The cat sat.", "the cat sat on the mat", 2 / 3),            # LCS 3: P=1 R=1/2
    ("police killed the gunman", "the gunman kill police", 0.5),  # no stemming: LCS 2 of 4
    ("same words here", "same words here", 1.0),
    ("x y z", "a b c", 0.0),
    ("", "", 1.0),
    (" ?! ", "", 1.0),            # no tokens on either side
    ("", "the cat", 0.0),
    ("the cat", "   ", 0.0),
    ("Caf\u00e9 au lait", "caf\u00e9 au lait!", 1.0),
    ("\u6211\u559c\u6b22\u732b", "\u6211\u559c\u6b22\u72d7", 0.75),
])
def test_rouge_l(prediction: str, reference: str, expected: float) -> None:
    assert rouge_l(prediction, reference) == pytest.approx(expected, abs=1e-12)


ROUGE_PAIRS = [
    ("the cat sat on the mat", "the cat is on the mat"),
    ("The quick brown fox jumps over the lazy dog.", "A quick brown dog jumps over the lazy fox!"),
    ("police killed the gunman", "the gunman was killed by police"),
    ("Hello, WORLD", "hello world"),
    ("It's 3:45 pm on 2024-01-02.", "it is 3 45 pm on 2024 01 02"),
    ("snake_case_name", "snake case name"),
    ("a a a a b", "a b a b a b"),
    ("one two three four five six seven", "seven six five four three two one"),
    ("x", "x y z"),
    ("totally different words", "nothing in common here"),
    ("{\"name\": \"Ada\", \"age\": 36}", "{\"age\": 36, \"name\": \"Ada\"}"),
    ("def f(x):\n    return x + 1", "def f(y): return y+1"),
    ("the the the the", "the"),
    ("  lots   of\twhitespace\n\nhere ", "lots of whitespace here"),
    ("The summary says revenue grew 12% in Q3.", "Revenue grew by 12 percent in the third quarter."),
    ("yes", "Yes."),
    ("no", "yes"),
    ("", "reference only"),
    ("prediction only", ""),
    (" ".join(f"w{i % 17}" for i in range(300)), " ".join(f"w{(i * 7) % 19}" for i in range(250))),
]


@pytest.mark.parametrize("prediction,reference", ROUGE_PAIRS)
def test_rouge_l_matches_rouge_score(prediction: str, reference: str) -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = scorer.score(reference, prediction)["rougeL"].fmeasure  # rouge_score takes (target, prediction)
    assert rouge_l(prediction, reference) == pytest.approx(expected, abs=1e-9)


# ----------------------------------------------------------------------------------------------- chrF


@pytest.mark.parametrize("prediction,reference,expected", [
    # n=1: P=2/2 R=2/3; n=2: P=1/1 R=1/2; n>=3: "ab" has no 3-grams, not effective.
    # avg P=1, avg R=7/12; F2 = 5*P*R/(4P+R) = (35/12)/(55/12) = 7/11
    ("ab", "abc", 7 / 11),
    # symmetric case: avg P=7/12 R=1 -> 5*(7/12)/(4*7/12+1) = (35/12)/(40/12) = 7/8 (recall weighted)
    ("abc", "ab", 7 / 8),
    ("abc", "abc", 1.0),
    ("a b c", "abc", 1.0),           # whitespace is removed before extracting n-grams
    ("ABC", "abc", 0.0),              # case-sensitive, like sacreBLEU's default
    ("xyz", "abc", 0.0),
    ("", "", 1.0),                    # both empty: 1.0 by convention (sacreBLEU says 0.0)
    ("  \n", "\t", 1.0),
    ("", "abc", 0.0),
    ("abc", " ", 0.0),
    ("\u00e9t\u00e9", "\u00e9t\u00e9", 1.0),
    ("\u6771\u4eac", "\u6771\u4eac\u90fd", 7 / 11),  # same shape as "ab" vs "abc"
])
def test_chrf_hand_computed(prediction: str, reference: str, expected: float) -> None:
    assert chrf(prediction, reference) == pytest.approx(expected, abs=1e-12)


CHRF_PAIRS = [
    ("the cat sat on the mat", "the cat is on the mat"),
    ("The quick brown fox jumps over the lazy dog.", "A quick brown dog jumps over the lazy fox!"),
    ("Hello, WORLD", "hello world"),
    ("ab", "abc"),
    ("a", "abcdefgh"),
    ("abcdefgh", "a"),
    ("aaaaaaa", "aaa"),
    ("x", "y"),
    ("totally different words", "nothing in common here"),
    ("{\"name\": \"Ada\", \"age\": 36}", "{\"age\": 36, \"name\": \"Ada\"}"),
    ("  lots   of\twhitespace\n\nhere ", "lots of whitespace here"),
    ("", "reference only"),
    ("prediction only", "   "),
    ("Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e", "cafe creme brulee"),
    ("caf\u00e9", "cafe\u0301"),                                        # NFC vs NFD: no normalisation
    ("\u6211\u559c\u6b22\u5403\u82f9\u679c\u3002", "\u6211\u4e0d\u559c\u6b22\u5403\u82f9\u679c\u3002"),
    ("\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
     "\u043f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440"),
    ("I \u2764\ufe0f pizza \U0001f355", "I love pizza \U0001f355\U0001f355"),
    ("\u3053\u3093\u306b\u3061\u306f\u4e16\u754c", "\u3053\u3093\u3070\u3093\u306f\u4e16\u754c"),
    ("The summary says revenue grew 12% in Q3.", "Revenue grew by 12 percent in the third quarter."),
    (" ".join(f"w{i % 17}" for i in range(300)), " ".join(f"w{(i * 7) % 19}" for i in range(250))),
]


@pytest.mark.parametrize("prediction,reference", CHRF_PAIRS)
def test_chrf_matches_sacrebleu(prediction: str, reference: str) -> None:
    expected = metrics.CHRF().sentence_score(prediction, [reference]).score / 100
    assert chrf(prediction, reference) == pytest.approx(expected, abs=1e-6)


def test_chrf_matches_sacrebleu_on_random_strings() -> None:
    scorer = metrics.CHRF()
    rng = random.Random(7)
    alphabet = "ab cd\u00e9\u5317\n"
    for _ in range(300):
        hyp = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        ref = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
        if not "".join(hyp.split()) and not "".join(ref.split()):
            continue  # both empty: our documented convention differs
        assert chrf(hyp, ref) == pytest.approx(scorer.sentence_score(hyp, [ref]).score / 100, abs=1e-9)


# ----------------------------------------------------------------------------------------------- regex


@pytest.mark.parametrize("prediction,pattern,expected", [
    ("555-1234", r"\d{3}-\d{4}", 1.0),
    ("  555-1234\n", r"\d{3}-\d{4}", 1.0),      # surrounding whitespace stripped
    ("call 555-1234", r"\d{3}-\d{4}", 0.0),     # full match, not search
    ("555-1234 ok", r"\d{3}-\d{4}", 0.0),
    ("", r".*", 1.0),
    ("", r"\d+", 0.0),
    ("YES", r"(?i)yes|no", 1.0),
    ("\u65e5\u672c\u8a9e", r"\w+", 1.0),
    ("line1\nline2", r"line1.line2", 0.0),     # '.' does not cross newlines unless asked
    ("line1\nline2", r"(?s)line1.line2", 1.0),
])
def test_regex_match(prediction: str, pattern: str, expected: float) -> None:
    assert regex_match(prediction, "ignored", pattern=pattern) == expected


def test_regex_match_invalid_or_missing_pattern() -> None:
    with pytest.raises(ValueError, match=r"invalid pattern '\(\[a-z'"):
        regex_match("abc", "", pattern="([a-z")
    with pytest.raises(ValueError, match="pattern"):
        regex_match("abc", "")


# ----------------------------------------------------------------------------------------------- JSON schema

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("prediction,expected", [
    ('{"name": "Ada", "age": 36}', 1.0),
    ('{"name": "Ada"}', 1.0),
    ('  ```json\n{"name": "Ada"}\n```  ', 1.0),     # a single surrounding fence is allowed (parse_json)
    ('{"name": "\u00c9mile \u5317\u4eac"}', 1.0),
    ('{"age": 36}', 0.0),                           # missing required field
    ('{"name": "Ada", "age": -1}', 0.0),
    ('{"name": "Ada", "age": "36"}', 0.0),
    ('{"name": "Ada", "extra": true}', 0.0),
    ('[{"name": "Ada"}]', 0.0),
    ('{"name": "Ada"', 0.0),                        # invalid JSON
    ('Here you go: {"name": "Ada"}', 0.0),
    ("", 0.0),
    ("   ", 0.0),
])
def test_json_schema_valid(prediction: str, expected: float) -> None:
    assert json_schema_valid(prediction, "ignored", schema=PERSON) == expected


def test_json_schema_valid_bad_schema() -> None:
    with pytest.raises(ValueError, match="invalid JSON schema"):
        json_schema_valid("{}", "", schema={"type": "not-a-type"})
    with pytest.raises(ValueError, match="schema"):
        json_schema_valid("{}", "")


# ----------------------------------------------------------------------------------------------- registry


def test_metrics_share_the_per_row_signature() -> None:
    options = {"pattern": r".*", "schema": {"type": "object"}, "unused_option": 1}
    for name, fn in all_metrics().items():
        score = fn('{"a": 1}', '{"a": 1}', **options)
        assert score == 1.0, name


# ----------------------------------------------------------------------------------------------- classification

LABELS = ["positive", "negative", "neutral"]
REFS = ["positive", "positive", "Positive", "negative", "negative", "neutral"]
PREDS = ["Positive", " positive\n", "negative", "NEGATIVE", "maybe", "positive"]


def test_classification_report_hand_computed() -> None:
    report = classification_report(PREDS, REFS, LABELS)
    assert report.accuracy == pytest.approx(3 / 6)
    assert report.outside_label_set == 1
    assert report.confusion == {
        "positive": {"positive": 2, "negative": 1, "neutral": 0, OTHER: 0},
        "negative": {"positive": 0, "negative": 1, "neutral": 0, OTHER: 1},
        "neutral": {"positive": 1, "negative": 0, "neutral": 0, OTHER: 0},
    }
    # positive: tp=2, predicted 3, support 3; negative: tp=1, predicted 2, support 2; neutral: tp=0, predicted 0
    expected = {
        "positive": {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3.0},
        "negative": {"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2.0},
        "neutral": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1.0},
    }
    for label, scores in expected.items():
        assert report.per_label[label] == pytest.approx(scores)
    assert report.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # 7/18


def test_classification_label_without_support_or_predictions_counts_as_zero_f1() -> None:
    report = classification_report(["A", "b"], ["a", "B"], ["a", "b", "c"])
    assert report.accuracy == 1.0
    assert report.per_label["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0.0}
    assert report.macro_f1 == pytest.approx(2 / 3)


def test_classification_all_outside_label_set() -> None:
    report = classification_report(["", "   ", "yes!"], ["yes", "no", "yes"], ["yes", "no"])
    assert report.accuracy == 0.0 and report.macro_f1 == 0.0
    assert report.outside_label_set == 3
    assert report.confusion["yes"][OTHER] == 2 and report.confusion["no"][OTHER] == 1


def test_classification_unicode_labels() -> None:
    report = classification_report(["\uff30\uff2f\uff33", "n\u00e9gatif", "NE\u0301GATIF"],
                                   ["pos", "N\u00c9GATIF", "n\u00e9gatif"], ["pos", "n\u00e9gatif"])
    assert report.accuracy == 1.0 and report.outside_label_set == 0


def test_classification_errors() -> None:
    with pytest.raises(ValueError, match=r"row 1 is 'bogus'"):
        classification_report(["a", "a"], ["a", "bogus"], ["a", "b"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        classification_report(["a", "b"], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no rows"):
        classification_report([], [], ["a"])
    with pytest.raises(ValueError, match="empty label set"):
        classification_report(["a"], ["a"], [])
    with pytest.raises(ValueError, match="same after normalisation"):
        classification_report(["a"], ["yes"], ["Yes", "yes "])
    with pytest.raises(ValueError, match="reserved"):
        classification_report(["a"], ["a"], ["a", OTHER])


def test_classification_report_matches_sklearn() -> None:
    skm = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed (optional cross-check only)")
    rng = random.Random(3)
    labels = ["cat", "dog", "bird", "fish", "never"]
    refs = [rng.choice(labels[:4]) for _ in range(300)]
    preds = [rng.choice([*labels[:3], "unknown", " Cat ", "DOG"]) if rng.random() < 0.5 else r for r in refs]
    report = classification_report(preds, refs, labels)

    canon = {label.casefold(): label for label in labels}
    y_pred = [canon.get(p.strip().casefold(), OTHER) for p in preds]
    assert report.accuracy == pytest.approx(skm.accuracy_score(refs, y_pred))
    assert report.macro_f1 == pytest.approx(skm.f1_score(refs, y_pred, labels=labels, average="macro", zero_division=0))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        refs, y_pred, labels=labels, average=None, zero_division=0)
    for i, label in enumerate(labels):
        assert report.per_label[label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": float(support[i])})
    matrix = skm.confusion_matrix(refs, y_pred, labels=[*labels, OTHER])
    for i, label in enumerate(labels):
        assert [report.confusion[label][col] for col in [*labels, OTHER]] == list(matrix[i])
    assert report.outside_label_set == y_pred.count(OTHER)
