"""The text preprocessing both sides run: tokenizing, ids, pairs, cutting and padding."""

import unicodedata

import numpy as np
import pytest

from modelrepo.manifest import DEFAULT_TOKEN_PATTERN, TextPreprocessing
from modelrepo.text import (
    SPECIAL_TOKENS,
    build_vocabulary,
    decode,
    encode,
    encode_batch,
    tokenize,
    truncate_pair,
    vocabulary_index,
)

WORDS = ["the", "cat", "sat", "on", "mat", "café", "don't", "a", "dog"]


def spec(max_length: int = 8, **changes: object) -> TextPreprocessing:
    settings: dict[str, object] = {
        "token_pattern": DEFAULT_TOKEN_PATTERN,
        "max_length": max_length,
        "vocabulary": [*SPECIAL_TOKENS, *WORDS],
        **changes,
    }
    return TextPreprocessing(**settings)


def ids(*words: str) -> list[int]:
    vocabulary = [*SPECIAL_TOKENS, *WORDS]
    return [vocabulary.index(w) for w in words]


def test_tokenize_lowercases_and_splits_on_the_pattern() -> None:
    assert tokenize("The CAT, sat!  On the-mat.", spec()) == [
        "the", "cat", "sat", "on", "the", "mat"
    ]  # fmt: skip
    assert tokenize("The CAT", spec(lowercase=False)) == ["The", "CAT"]
    assert tokenize("Don't stop", spec()) == ["don't", "stop"]


def test_nfc_makes_composed_and_decomposed_accents_one_word() -> None:
    composed, decomposed = "Café", unicodedata.normalize("NFD", "Café")
    assert composed != decomposed
    assert tokenize(composed, spec()) == tokenize(decomposed, spec()) == ["café"]
    np.testing.assert_array_equal(encode(composed, spec()), encode(decomposed, spec()))
    assert encode(decomposed, spec())[0] == ids("café")[0]


def test_encode_pads_right_with_zero_to_exactly_max_length() -> None:
    x = encode("the cat sat", spec(max_length=6))
    assert x.dtype == np.int64 and x.shape == (6,)
    assert x.tolist() == [*ids("the", "cat", "sat"), 0, 0, 0]


def test_encode_keeps_the_first_max_length_tokens() -> None:
    assert encode("the cat sat on the mat", spec(max_length=4)).tolist() == ids(
        "the", "cat", "sat", "on"
    )


def test_unknown_words_and_spelled_out_specials_become_unk() -> None:
    s = spec(token_pattern=r"\S+")  # a pattern that can produce "<sep>" from the text itself
    assert encode("the zebra <sep> <pad>", s).tolist()[:4] == [ids("the")[0], 1, 1, 1]


def test_empty_text_is_all_padding() -> None:
    assert encode("?!", spec()).tolist() == [0] * 8


def test_decode_round_trips_known_words() -> None:
    s = spec()
    assert decode(encode("The cat sat on a mat", s), s) == ["the", "cat", "sat", "on", "a", "mat"]
    assert decode(encode("the zebra", s), s) == ["the", "<unk>"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        decode(np.array([0, 99]), s)


def test_pair_is_first_sep_second() -> None:
    s = spec(max_length=8)
    x = encode("the cat", s, "a dog")
    assert x.tolist() == [*ids("the", "cat"), 2, *ids("a", "dog"), 0, 0, 0]
    assert decode(x, s) == ["the", "cat", "<sep>", "a", "dog"]


@pytest.mark.parametrize(
    ("first", "second", "budget", "kept"),
    [
        (3, 2, 7, (3, 2)),  # fits: unchanged
        (10, 2, 7, (5, 2)),  # the short side is kept whole
        (2, 10, 7, (2, 5)),
        (10, 10, 7, (4, 3)),  # both long: ceil and floor of half, the first gets the extra one
        (10, 10, 8, (4, 4)),
        (0, 10, 7, (0, 7)),
        (5, 0, 1, (1, 0)),
    ],
)
def test_truncate_pair_trims_the_longer_side_first(
    first: int, second: int, budget: int, kept: tuple[int, int]
) -> None:
    a, b = truncate_pair(list(range(first)), list(range(100, 100 + second)), budget)
    assert (len(a), len(b)) == kept
    assert a == list(range(kept[0])) and b == list(range(100, 100 + kept[1]))  # ends are cut


def test_truncate_pair_matches_popping_from_the_longer_side() -> None:
    for first in range(12):
        for second in range(12):
            for budget in range(1, 15):
                a, b = list(range(first)), list(range(second))
                while len(a) + len(b) > budget:
                    (a if len(a) > len(b) else b).pop()
                assert truncate_pair(list(range(first)), list(range(second)), budget) == (a, b)


def test_long_pair_fills_max_length_with_the_separator_inside() -> None:
    s = spec(max_length=6)
    x = encode("the cat sat on the mat", s, "a dog sat on a mat")
    assert x.tolist() == [*ids("the", "cat", "sat"), 2, *ids("a", "dog")]


def test_encode_batch_is_the_rows_of_encode() -> None:
    s = spec()
    texts, pairs = ["the cat", "a dog sat", ""], ["mat", "on a mat", "the"]
    batch = encode_batch(texts, s)
    assert batch.shape == (3, 8) and batch.dtype == np.int64
    for row, text in zip(batch, texts, strict=True):
        np.testing.assert_array_equal(row, encode(text, s))
    paired = encode_batch(texts, s, pairs)
    for row, text, pair in zip(paired, texts, pairs, strict=True):
        np.testing.assert_array_equal(row, encode(text, s, pair))
    assert encode_batch([], s).shape == (0, 8)
    with pytest.raises(ValueError, match="one each"):
        encode_batch(texts, s, pairs[:2])


def test_build_vocabulary_orders_by_count_then_alphabet() -> None:
    texts = ["b a c", "A b", "d b a", "e"]
    vocabulary = build_vocabulary(texts, max_size=10)
    assert vocabulary == [*SPECIAL_TOKENS, "a", "b", "c", "d", "e"]  # a=3, b=3, then ones
    assert build_vocabulary(reversed(texts), max_size=10) == vocabulary  # order-independent
    assert build_vocabulary(texts, max_size=5) == [*SPECIAL_TOKENS, "a", "b"]
    assert build_vocabulary(texts, max_size=10, min_count=2) == [*SPECIAL_TOKENS, "a", "b"]
    assert build_vocabulary(["A a"], max_size=10, lowercase=False) == [*SPECIAL_TOKENS, "A", "a"]


def test_build_vocabulary_refuses_what_cannot_make_a_vocabulary() -> None:
    with pytest.raises(ValueError, match="max_size"):
        build_vocabulary(["a"], max_size=3)
    with pytest.raises(ValueError, match="no token occurs"):
        build_vocabulary(["a b"], max_size=10, min_count=2)


def test_vocabulary_built_from_texts_encodes_them() -> None:
    texts = ["Stocks fell today", "The striker scored today"]
    s = TextPreprocessing(
        token_pattern=DEFAULT_TOKEN_PATTERN,
        max_length=5,
        vocabulary=build_vocabulary(texts, max_size=100),
    )
    for text in texts:
        assert decode(encode(text, s), s) == tokenize(text, s)


def test_vocabulary_index_follows_a_changed_vocabulary() -> None:
    s = spec()
    assert vocabulary_index(s)["cat"] == 4
    changed = s.model_copy(update={"vocabulary": [*SPECIAL_TOKENS, "cat", "dog"]})
    assert vocabulary_index(changed)["cat"] == 3
    assert encode("the cat", changed).tolist()[:2] == [1, 3]
    assert vocabulary_index(s)["cat"] == 4 and len(vocabulary_index(s)) == 12
