"""The text preprocessing that a manifest describes, as plain Python and numpy.

Training encodes its data with these functions and the service calls the same ones, so the same
request text gives the same token ids, and so the same logits, on both sides.

The rule, in order:
1. Unicode NFC normalisation, so that "é" typed as one code point and "e" + a combining accent
   are the same word; then lower-casing when `spec.lowercase` (and NFC again, since
   lower-casing can leave a string that is not NFC).
2. Tokens are `re.findall(spec.token_pattern, text)`.
3. Each token becomes its index in `spec.vocabulary`; a token that is not there, or that spells
   a special token (request text cannot inject a separator or padding), becomes the unk id.
4. One text: its first `max_length` ids. A pair: ids(text) + [sep] + ids(text_pair), cut to
   fit by `truncate_pair` (the longer side loses tokens from its end first).
5. Padding with the pad id (0) on the right to exactly `max_length`.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from modelrepo.manifest import DEFAULT_TOKEN_PATTERN, TextPreprocessing

SPECIAL_TOKENS: tuple[str, str, str] = ("<pad>", "<unk>", "<sep>")
T = TypeVar("T")  # what truncate_pair cuts: ids, or the tokens they stand for

# id(vocabulary list) -> (that list, token -> id). Holding the list keeps its id from being
# reused; a few entries cover every model a process serves.
_INDEX_CACHE: dict[int, tuple[list[str], dict[str, int]]] = {}
_INDEX_CACHE_SIZE = 16
_INDEX_LOCK = threading.Lock()


def normalize_text(text: str, *, lowercase: bool) -> str:
    """NFC, then lower-case when asked (then NFC again: see the module docstring)."""
    text = unicodedata.normalize("NFC", text)
    if lowercase:
        text = unicodedata.normalize("NFC", text.lower())
    return text


def _tokens(text: str, lowercase: bool, token_pattern: str) -> list[str]:
    # re caches compiled patterns, so there is no need to keep our own.
    return re.findall(token_pattern, normalize_text(text, lowercase=lowercase))


def tokenize(text: str, spec: TextPreprocessing) -> list[str]:
    """The tokens of `text`: normalised, lower-cased if `spec.lowercase`, matched by the pattern."""
    return _tokens(text, spec.lowercase, spec.token_pattern)


def vocabulary_index(spec: TextPreprocessing) -> dict[str, int]:
    """token -> id for `spec.vocabulary`, built once per vocabulary: rebuilding a dict of a large
    vocabulary for every request would cost more than the tokenizing."""
    with _INDEX_LOCK:
        hit = _INDEX_CACHE.get(id(spec.vocabulary))
        if hit is not None and hit[0] is spec.vocabulary:
            return hit[1]
        index = {token: i for i, token in enumerate(spec.vocabulary)}
        if len(_INDEX_CACHE) >= _INDEX_CACHE_SIZE:
            del _INDEX_CACHE[next(iter(_INDEX_CACHE))]  # the oldest entry
        _INDEX_CACHE[id(spec.vocabulary)] = (spec.vocabulary, index)
        return index


def tokens_to_ids(tokens: Iterable[str], spec: TextPreprocessing) -> list[int]:
    """Vocabulary ids; unknown tokens and tokens spelling a special token become the unk id."""
    ids = vocabulary_index(spec)
    specials = {spec.pad_token, spec.unk_token, spec.sep_token}
    return [spec.unk_id if t in specials else ids.get(t, spec.unk_id) for t in tokens]


def truncate_pair(first: list[T], second: list[T], budget: int) -> tuple[list[T], list[T]]:
    """Cut two id lists to at most `budget` ids in all, fairly: while too long, drop the last id
    of the longer list (of `second` on a tie). So a short side is kept whole and two long sides
    end up with ceil(budget / 2) and floor(budget / 2) ids."""
    if len(first) + len(second) <= budget:
        return first, second
    keep_first = min(len(first), max((budget + 1) // 2, budget - len(second)))
    return first[:keep_first], second[: budget - keep_first]


def encode(text: str, spec: TextPreprocessing, text_pair: str | None = None) -> NDArray[np.int64]:
    """One text (or a pair) as (max_length,) int64 ids, padded with 0 on the right."""
    ids = tokens_to_ids(tokenize(text, spec), spec)
    if text_pair is None:
        ids = ids[: spec.max_length]
    else:
        pair_ids = tokens_to_ids(tokenize(text_pair, spec), spec)
        ids, pair_ids = truncate_pair(ids, pair_ids, spec.max_length - 1)
        ids = [*ids, spec.sep_id, *pair_ids]
    out = np.full(spec.max_length, spec.pad_id, dtype=np.int64)
    out[: len(ids)] = ids
    return out


def encode_batch(
    texts: Sequence[str], spec: TextPreprocessing, pairs: Sequence[str] | None = None
) -> NDArray[np.int64]:
    """Texts (and, for pair models, their second texts) as one (N, max_length) int64 array."""
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(pairs)} pair texts; give one each")
    out = np.empty((len(texts), spec.max_length), dtype=np.int64)
    for i, text in enumerate(texts):
        out[i] = encode(text, spec, None if pairs is None else pairs[i])
    return out


def decode(ids: ArrayLike, spec: TextPreprocessing) -> list[str]:
    """The tokens that 1-D `ids` stand for, padding left out (for tests and debugging)."""
    values = np.asarray(ids)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got {values.dtype} {values.shape}")
    bad = values[(values < 0) | (values >= len(spec.vocabulary))]
    if bad.size:
        raise ValueError(
            f"ids {bad[:5].tolist()} lie outside the vocabulary of {len(spec.vocabulary)}"
        )
    return [spec.vocabulary[int(i)] for i in values if i != spec.pad_id]


def build_vocabulary(
    texts: Iterable[str],
    *,
    max_size: int,
    min_count: int = 1,
    lowercase: bool = True,
    token_pattern: str = DEFAULT_TOKEN_PATTERN,
    specials: tuple[str, str, str] = SPECIAL_TOKENS,
) -> list[str]:
    """`specials` (pad, unk, sep), then the words seen at least `min_count` times, most frequent
    first and alphabetically among equals, so the same texts always give the same list.
    `max_size` counts the specials too."""
    if max_size < len(specials) + 1:
        raise ValueError(f"max_size must leave room for a word after the specials, got {max_size}")
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_tokens(text, lowercase, token_pattern))
    for token in specials:
        counts.pop(token, None)
    words = sorted((t for t, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
    if not words:
        raise ValueError(f"no token occurs at least {min_count} time(s) in the texts")
    return [*specials, *words[: max_size - len(specials)]]
