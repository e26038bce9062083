"""Byte-level BPE tokenizer, token-for-token compatible with OpenAI CLIP's text tokenizer.

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision") encodes captions with a lower-cased byte-pair encoding (BPE; Sennrich, Haddow and
Birch 2016, "Neural Machine Translation of Rare Words with Subword Units") over UTF-8 bytes, with a
49,408-token vocabulary. This module reproduces it exactly (same text cleaning, pre-tokenisation
and vocabulary layout, hence the same ids for any text) and adds a trainer that learns a new
merges file from your own captions.

Vocabulary layout, in id order:
    256 byte symbols | the same 256 with '</w>' (end of word) | one token per merge | SOT | EOT
Each byte is drawn as a visible character, so a merges file stays readable text.

    >>> tokenize(["a photo of a cat"], context_length=8)
    tensor([[49406,   320,  1125,   539,   320,  2368, 49407,     0]])
"""
import functools
import gzip
import heapq
import html
import itertools
import os
from collections import Counter, defaultdict

import ftfy
import regex
import torch

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
CLIP_VOCAB_SIZE = 49408  # OpenAI's merges file holds 262k merges; CLIP uses the first 48,894
BASE_VOCAB_SIZE = 2 * 256 + 2  # byte symbols, their end-of-word variants, SOT and EOT
DEFAULT_MERGES_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "bpe_simple_vocab_16e6.txt.gz")
MERGES_HEADER = "#version: 0.2"

# --- text cleaning and pre-tokenisation (both exactly as in CLIP) ------------------------------

_WHITESPACE_RUN = regex.compile(r"\s+")
_PRETOKEN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>"  # special tokens typed into a caption stay whole
    r"|'s|'t|'re|'ve|'m|'ll|'d"            # English contractions become words of their own
    r"|\p{L}+"                             # a run of letters
    r"|\p{N}"                              # each digit alone, so numbers never merge
    r"|[^\s\p{L}\p{N}]+",                  # a run of anything else that is not whitespace
    regex.IGNORECASE)


def clean_text(text: str) -> str:
    """CLIP's cleaning: ftfy.fix_text, HTML-unescape twice, collapse whitespace, strip, lower-case."""
    if text.isascii() and text.isprintable() and "&" not in text:
        # Fast path, same result: ftfy and html.unescape leave printable ASCII without '&' as it
        # is, and its only whitespace is ' ', which str.split() collapses just as \s+ does.
        return " ".join(text.split()).lower()
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE_RUN.sub(" ", text).strip().lower()


def pretokenize(text: str) -> list[str]:
    """Clean `text` and split it into the words that BPE then segments one at a time."""
    return _PRETOKEN.findall(clean_text(text))


def _byte_symbols() -> dict[int, str]:
    """Byte -> a visible stand-in character, in CLIP's vocabulary order: printable Latin-1 bytes stand
    for themselves and come first; the other 68 (control codes, space, soft hyphen, ...) follow in
    byte order, drawn as chr(256), chr(257), ..."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


BYTE_SYMBOLS = _byte_symbols()
_LATIN1_TO_SYMBOL = str.maketrans({chr(b): s for b, s in BYTE_SYMBOLS.items()})
_SYMBOL_TO_LATIN1 = str.maketrans({s: chr(b) for b, s in BYTE_SYMBOLS.items()})


def _word_symbols(word: str) -> list[str]:
    """BPE's starting point for a word: one stand-in per UTF-8 byte, the last marked as word end."""
    symbols = list(word.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_SYMBOL))
    symbols[-1] += END_OF_WORD
    return symbols


def _apply_merge(symbols: list[str], first: str, second: str, start: int = 0) -> list[str]:
    """Join every non-overlapping `first second` in symbols[start:], scanning left to right."""
    merged, i = symbols[:start], start
    while i < len(symbols):
        if symbols[i] == first and i + 1 < len(symbols) and symbols[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def _preview(value, width: int = 40) -> str:
    """A short one-line repr of `value` for error messages."""
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


# --- merges files --------------------------------------------------------------------------------

def load_merges(path: str, limit: int | None = None) -> list[tuple[str, str]]:
    """Read a CLIP-format merges file (gzip or plain): a '#version' header, then one 'a b' a line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"merges file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip's magic number, whatever the file is called
        data = gzip.decompress(data)
    # Split off only the lines needed: CLIP reads 48,894 of the 262k in OpenAI's file.
    lines = data.decode("utf-8").split("\n", -1 if limit is None else limit + 1)
    first_merge_line = 2 if "#version" in lines[0] else 1
    merges = []
    for line_number, line in enumerate(lines[first_merge_line - 1:][:limit], first_merge_line):
        if line == "" and line_number == len(lines):
            break  # the file's final newline
        first, _, second = line.rstrip("\r").partition(" ")
        if not first or not second or " " in second:
            raise ValueError(f"{path}:{line_number}: expected two symbols separated by a space, got {line!r}")
        merges.append((first, second))
    return merges


def save_merges(merges, path: str) -> None:
    """Write merges in CLIP's format; gzip-compressed (byte-for-byte reproducible) if path ends .gz.
    train_bpe's symbols are byte stand-ins, never whitespace, so every line reads back as one merge."""
    lines = [MERGES_HEADER] + [f"{first} {second}" for first, second in merges]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)


# --- the tokenizer -------------------------------------------------------------------------------

class Tokenizer:
    """Text to BPE ids and back. `Tokenizer()` is OpenAI CLIP's tokenizer.

    merges_path: a CLIP-format merges file (default: OpenAI's, shipped in tinyclip/assets).
    vocab_size: use only the merges that fit this many tokens; by default every merge in the
        file, capped at CLIP's 49,408 tokens as OpenAI's code does.
    cache_size: how many distinct words the word cache holds before it starts afresh.
    """

    def __init__(self, merges_path: str | None = None, vocab_size: int | None = None, cache_size: int = 1_000_000):
        merges_path = merges_path or DEFAULT_MERGES_PATH
        max_merges = (vocab_size or CLIP_VOCAB_SIZE) - BASE_VOCAB_SIZE
        if max_merges < 0:
            raise ValueError(f"vocab_size must be at least {BASE_VOCAB_SIZE}, got {vocab_size}")
        merges = load_merges(merges_path, limit=max_merges)
        if vocab_size is not None and len(merges) < max_merges:
            raise ValueError(f"{merges_path} has {len(merges)} merges, too few for vocab_size={vocab_size}")

        vocab = list(BYTE_SYMBOLS.values())
        vocab += [symbol + END_OF_WORD for symbol in vocab]
        known = set(vocab)
        for line_number, (first, second) in enumerate(merges, 2):
            if first not in known or second not in known:
                raise ValueError(f"{merges_path}:{line_number}: merge {first!r} {second!r} uses a symbol no "
                                 "earlier line made; is this a CLIP-format merges file?")
            known.add(first + second)
            vocab.append(first + second)
        vocab += [SOT, EOT]

        self.vocab = vocab  # id -> token string
        self.vocab_size = len(vocab)
        self.sot_token_id, self.eot_token_id = self.vocab_size - 2, self.vocab_size - 1
        self.merges = merges
        self._merge_rank = {pair: rank for rank, pair in enumerate(merges)}
        self._token_id = {token: i for i, token in enumerate(vocab)}
        self._cache_size = cache_size
        self._cache = {}  # word -> tuple of ids, so each distinct word is segmented once

    @functools.cached_property
    def _token_bytes(self) -> list[bytes]:
        """id -> the bytes it decodes to: a word end becomes a space, SOT and EOT nothing."""
        return [token.removesuffix(END_OF_WORD).translate(_SYMBOL_TO_LATIN1).encode("latin-1")
                + b" " * token.endswith(END_OF_WORD) for token in self.vocab[:-2]] + [b"", b""]

    def bpe(self, word: str) -> list[str]:
        """Segment one pre-tokenised word into vocabulary tokens (strings) by applying merges."""
        if word in (SOT, EOT):
            return [word]  # typed into a caption, a special token stays one token
        parts = _word_symbols(word)
        rank_of, no_merge = self._merge_rank.get, len(self._merge_rank)
        while len(parts) > 1:
            # Rank all adjacent pairs in one C-level pass, then apply the earliest-learned merge
            # everywhere in the word, as training did.
            ranks = list(map(rank_of, zip(parts, parts[1:]), itertools.repeat(no_merge)))
            best = min(ranks)
            if best == no_merge:
                break
            i = ranks.index(best)  # its first occurrence: nothing before it changes
            parts = _apply_merge(parts, parts[i], parts[i + 1], start=i)
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without SOT/EOT."""
        ids, cache = [], self._cache
        for word in pretokenize(text):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = tuple(self._token_id[token] for token in self.bpe(word))
                if len(cache) >= self._cache_size:
                    cache.clear()  # bounds memory on an endless stream of new words
                cache[word] = word_ids
            ids.extend(word_ids)
        return ids

    def decode(self, ids) -> str:
        """Text of `ids` (list or 1-D tensor), dropping SOT, EOT and the padding after the last EOT.

        Every word ends in a space ("hello, world" -> "hello , world"), so encode(decode(ids)) == ids
        (SOT/EOT aside), and text with spaces between all its words comes back as clean_text(text).
        """
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if self.eot_token_id in ids:
            ids = ids[:len(ids) - ids[::-1].index(self.eot_token_id)]  # the rest is padding
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        text = b"".join(self._token_bytes[i] for i in ids).decode("utf-8", errors="replace")
        return text.removesuffix(" ")

    def tokenize(self, texts, context_length: int = 77, truncate: bool = True) -> torch.LongTensor:
        """[N, context_length] ids: SOT, text, EOT, zero padding. See the module-level `tokenize`."""
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (bytes, dict)) or not hasattr(texts, "__iter__"):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        if not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"context_length must be an int >= 2 (room for SOT and EOT), got {context_length!r}")
        rows = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, not str: {_preview(text)}")
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(f"texts[{index}] {_preview(text)} is {len(ids)} tokens with SOT/EOT, more "
                                     f"than context_length={context_length}; pass truncate=True to cut it")
                ids = ids[:context_length - 1] + [self.eot_token_id]  # the text tower pools at EOT
            rows.append(ids + [0] * (context_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).view(len(rows), context_length)


@functools.lru_cache(maxsize=None)
def default_tokenizer() -> Tokenizer:
    """The shared OpenAI CLIP tokenizer, built on first use."""
    return Tokenizer()


def tokenize(texts, context_length: int = 77, truncate: bool = True) -> torch.LongTensor:
    """Tokenize a str or a list of str with CLIP's vocabulary into a LongTensor [N, context_length].

    Each row is SOT, the text's ids, EOT, then zeros. A text too long for the context is cut so
    that EOT stays its last token (truncate=True, the default), or raises ValueError.
    """
    return default_tokenizer().tokenize(texts, context_length, truncate)


# --- training a new vocabulary -------------------------------------------------------------------

def train_bpe(texts, vocab_size: int) -> list[tuple[str, str]]:
    """Learn CLIP-style BPE merges from captions until the vocabulary holds `vocab_size` tokens.

    Same cleaning, pre-tokenisation and byte alphabet as CLIP. Each round merges the most frequent
    adjacent pair (ties: the smallest pair in string order, so a corpus always gives the same merges)
    and stops early if no pair is left. Save with `save_merges`, load with `Tokenizer(path)`.
    """
    if not isinstance(vocab_size, int) or vocab_size < BASE_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be an int >= {BASE_VOCAB_SIZE} (bytes, end-of-word bytes, "
                         f"SOT, EOT), got {vocab_size!r}")
    if isinstance(texts, str):
        raise TypeError("texts must be a list of str, not a single str")
    word_counts = Counter()
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, not str: {_preview(text)}")
        word_counts.update(word for word in pretokenize(text) if word not in (SOT, EOT))

    # The corpus as a word-frequency table. Pair counts are updated incrementally, and an index of
    # which words hold each pair means a merge revisits only the words it changes.
    words, freqs = [], []
    pair_counts, words_with = Counter(), defaultdict(set)
    for word, freq in sorted(word_counts.items()):
        parts = _word_symbols(word)
        for pair in zip(parts, parts[1:]):
            pair_counts[pair] += freq
            words_with[pair].add(len(words))
        words.append(parts)
        freqs.append(freq)
    # A max-heap on (count, then smallest pair); entries go stale as counts change and are
    # skipped when popped, since the current count is pushed anew after every change.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    while heap and len(merges) < vocab_size - BASE_VOCAB_SIZE:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count:
            continue
        merges.append(pair)
        change = Counter()
        for index in sorted(words_with.pop(pair)):
            parts, freq = words[index], freqs[index]
            merged = _apply_merge(parts, *pair)
            for old in zip(parts, parts[1:]):
                change[old] -= freq
            for new in zip(merged, merged[1:]):
                change[new] += freq
                words_with[new].add(index)
            words[index] = merged
        for changed, delta in change.items():
            if delta:
                pair_counts[changed] += delta
                if pair_counts[changed] > 0:
                    heapq.heappush(heap, (-pair_counts[changed], changed))
        del pair_counts[pair]
    return merges
