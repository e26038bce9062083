"""Tests for tinyclip/tokenizer.py: CLIP-compatible byte-level BPE and the BPE trainer.

Checks that ids equal OpenAI CLIP's own tokenizer on 75 varied captions (known answers stored in
tests/fixtures/tokenizer_ids.json by scripts/fixtures/make_tokenizer_fixture.py), that tokenize()
pads, truncates (EOT kept last) and rejects bad input with clear errors, that decode round-trips,
that the cleaning fast path equals the full ftfy path, that the word cache never changes results,
and that a trained vocabulary is deterministic, saves/loads in CLIP's format and round-trips.
"""
import gzip
import html
import json
import os
import random

import ftfy
import pytest
import regex
import torch

from tinyclip.tokenizer import (CLIP_VOCAB_SIZE, DEFAULT_MERGES_PATH, Tokenizer, clean_text,
                                default_tokenizer, load_merges, save_merges, tokenize, train_bpe)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizer_ids.json")
CASES = json.load(open(FIXTURE, encoding="utf-8"))["cases"]
SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


# --- compatibility with OpenAI CLIP -------------------------------------------------------------

def test_vocabulary_layout(tok):
    assert tok.vocab_size == CLIP_VOCAB_SIZE == 49408
    assert (tok.sot_token_id, tok.eot_token_id) == (SOT, EOT)
    assert tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c['text'][:24]!r}" for i, c in enumerate(CASES)])
def test_ids_match_openai_reference(tok, case):
    assert tok.encode(case["text"]) == case["ids"]


def test_tokenize_rows_match_openai_reference():
    rows = [case for case in CASES if "tokenize_77" in case]
    assert len(rows) >= 8
    for context_length in (77, 16):
        expected = torch.tensor([case[f"tokenize_{context_length}"] for case in rows])
        got = tokenize([case["text"] for case in rows], context_length=context_length)
        assert got.dtype == torch.long and got.shape == (len(rows), context_length)
        assert torch.equal(got, expected)


def test_fixture_covers_the_hard_cases():
    texts = [case["text"] for case in CASES]
    assert len(texts) >= 60
    for needle in ["&amp;", "\u00c3", "\U0001f468\u200d", "\u732b", "https://", "'re", "\t", "\u0301"]:
        assert any(needle in text for text in texts), needle


# --- tokenize(): padding, truncation, errors ------------------------------------------------------

def test_empty_string_is_sot_eot_then_padding():
    row = tokenize("", context_length=16)
    assert row.tolist() == [[SOT, EOT] + [0] * 14]


def test_truncation_keeps_eot_last():
    long_text = "the cat sat on the mat " * 20
    row = tokenize(long_text, context_length=16)[0]
    full = [SOT] + default_tokenizer().encode(long_text) + [EOT]
    assert row.tolist() == full[:15] + [EOT]
    assert (tokenize([long_text, "a dog"])[:, -1] == torch.tensor([EOT, 0])).all()


def test_exact_fit_is_not_truncated(tok):
    fits = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    assert len(tok.encode(fits)) == 14
    assert tokenize(fits, context_length=16, truncate=False)[0].tolist() == [SOT] + tok.encode(fits) + [EOT]


def test_truncate_false_raises_one_line_error_naming_text():
    with pytest.raises(ValueError) as error:
        tokenize(["short", "a very long caption\nthat keeps going " * 10], context_length=16, truncate=False)
    message = str(error.value)
    assert "\n" not in message and "texts[1]" in message and "'a very long caption\\nthat" in message
    assert "context_length=16" in message and len(message) < 200


@pytest.mark.parametrize("bad, expected", [(["ok", 7], "texts[1] is int"), ([None], "texts[0] is NoneType"),
                                           ([b"bytes"], "texts[0] is bytes"), (42, "got int")])
def test_non_string_input_raises_type_error_naming_item(bad, expected):
    with pytest.raises(TypeError, match=regex.escape(expected)):
        tokenize(bad)


def test_bad_context_length():
    with pytest.raises(ValueError, match="context_length"):
        tokenize("a cat", context_length=1)


def test_tuple_and_empty_list_inputs():
    assert torch.equal(tokenize(("a cat", "a dog")), tokenize(["a cat", "a dog"]))
    assert tokenize([], context_length=16).shape == (0, 16)


# --- decode ---------------------------------------------------------------------------------------

def test_decode_round_trips_cleaned_text(tok):
    for text in ["a photo of a cat", "Café Crème  brûlée", "猫 and 🐱 emoji", "  Fish &amp; chips  ", ""]:
        assert tok.decode(tok.encode(text)) == clean_text(text)


def test_decode_drops_sot_eot_and_padding(tok):
    row = tokenize("a photo of a cat", context_length=16)[0]
    assert tok.decode(row) == "a photo of a cat"
    assert tok.decode(tokenize("", context_length=8)[0]) == ""


def test_decode_then_encode_is_identity_on_ids(tok):
    # Decoding puts a space at every word end, so re-encoding gives back the same ids
    # (except for SOT/EOT, which decode drops, and entities that re-cleaning would unescape).
    for case in CASES:
        if "&" not in case["text"] and "<|" not in case["text"]:
            assert tok.encode(tok.decode(case["ids"])) == case["ids"], case["text"]


def test_decode_rejects_unknown_ids(tok):
    with pytest.raises(ValueError, match="49408"):
        tok.decode([320, 49408])


# --- cleaning and the word cache -----------------------------------------------------------------

def _full_clean(text):
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


def test_ascii_fast_path_equals_full_cleaning():
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(32, 127)] * 3 + [" "] * 20
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(2000)]
    texts += ["Hello World", "it's  <b> x </b>  ", "a;b:c", "A\tB", "\x1b[1mX", "x &amp; y"]
    for text in texts:
        assert clean_text(text) == _full_clean(text), repr(text)


def test_cache_does_not_change_results():
    cold = Tokenizer(cache_size=1)  # cache forgets after every new word
    warm = default_tokenizer()
    for case in CASES:
        assert cold.encode(case["text"]) == warm.encode(case["text"]) == warm.encode(case["text"])
    assert "cat" in warm._cache and len(cold._cache) <= 3


def test_vocab_size_argument_limits_merges():
    small = Tokenizer(vocab_size=1000)
    assert small.vocab_size == 1000 and (small.sot_token_id, small.eot_token_id) == (998, 999)
    ids = small.encode("a photo of a hippopotamus")
    assert max(ids) < 998 and small.decode(ids) == "a photo of a hippopotamus"


def test_missing_or_malformed_merges_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Tokenizer(str(tmp_path / "nope.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("#version: 0.2\ni n\nthree symbols here\n")
    with pytest.raises(ValueError, match="bad.txt:3"):
        Tokenizer(str(bad))
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("#version: 0.2\nin g\n")
    with pytest.raises(ValueError, match="unknown.txt:2"):
        Tokenizer(str(unknown))


# --- training a vocabulary --------------------------------------------------------------------------

def _corpus(n=600):
    rng = random.Random(1)
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "Café-brown", "naïve-pink"]
    shapes = ["circle", "square", "triangle", "hexagon", "star", "ellipse", "猫"]
    places = ["on the left", "on the right", "at the top", "near the bottom", "in the centre"]
    return [f"a {rng.choice(colours)} {rng.choice(shapes)} {rng.choice(places)}, {rng.randint(0, 99)}% big!"
            for _ in range(n)]


def test_train_bpe_is_deterministic_and_round_trips(tmp_path):
    corpus = _corpus()
    merges = train_bpe(corpus, vocab_size=700)
    assert merges == train_bpe(list(corpus), vocab_size=700)  # same corpus, same merges
    assert 0 < len(merges) <= 700 - 514 and len(set(merges)) == len(merges)
    learned = [a + b for a, b in merges]
    assert "the</w>" in learned[:10] and "circle</w>" in learned  # frequent words become one token

    path = str(tmp_path / "merges.txt.gz")
    save_merges(merges, path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert f.readline().startswith("#version")
    assert load_merges(path) == merges
    trained = Tokenizer(path)
    assert trained.vocab_size == 514 + len(merges)
    assert (trained.sot_token_id, trained.eot_token_id) == (trained.vocab_size - 2, trained.vocab_size - 1)
    for text in corpus[:100]:
        ids = trained.encode(text)
        assert trained.decode(ids) == " ".join(regex.findall(r"[\p{L}]+|\p{N}|[^\s\p{L}\p{N}]+", clean_text(text)))
        assert len(ids) < len(Tokenizer(path, vocab_size=514).encode(text))  # merges do compress
    assert trained.encode("a red circle") == [trained._token_id[t] for t in ["a</w>", "red</w>", "circle</w>"]]
    row = trained.tokenize("a blue star", context_length=8)[0]
    assert row[0] == trained.sot_token_id and trained.decode(row) == "a blue star"


def test_train_bpe_plain_file_and_early_stop(tmp_path):
    merges = train_bpe(["ab ab abc"], vocab_size=600)
    assert merges == [("a", "b</w>"), ("a", "b"), ("ab", "c</w>")]  # stops when no pair is left
    path = str(tmp_path / "tiny.txt")
    save_merges(merges, path)
    assert open(path, encoding="utf-8").read() == "#version: 0.2\na b</w>\na b\nab c</w>\n"
    assert Tokenizer(path).decode(Tokenizer(path).encode("abc ab")) == "abc ab"


def test_train_bpe_bad_input():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["a cat"], vocab_size=100)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        train_bpe(["a cat", 3], vocab_size=600)


def test_shipped_merges_file_is_clips():
    with gzip.open(DEFAULT_MERGES_PATH, "rt", encoding="utf-8") as f:
        assert "#version" in f.readline()
    assert len(default_tokenizer().merges) == CLIP_VOCAB_SIZE - 514
