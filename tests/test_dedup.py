"""harvest.dedup: n-gram deduplication over content tokens."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastsae.harvest.dedup import NgramDedup, ngram_hashes
from fastsae.store.token_types import TokenType

T, U, A, S = TokenType.TEMPLATE, TokenType.USER, TokenType.ASSISTANT, TokenType.SPECIAL


def test_drops_samples_sharing_an_ngram():
    d = NgramDedup(4)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 50_000, 100)
    b = rng.integers(0, 50_000, 100)
    assert not d.is_duplicate(a)
    assert not d.is_duplicate(b)
    assert d.is_duplicate(np.concatenate([b[:3], a[40:44], b[10:20]]))  # contains a 4-gram of a
    assert not d.is_duplicate(np.concatenate([a[:3], b[50:53], a[60:63]]))  # only 3-grams overlap
    assert d.is_duplicate(a) and (d.kept, d.dropped) == (3, 2)
    assert "dropped 2" in d.summary()


def test_duplicates_only_against_kept_samples():
    d = NgramDedup(3)
    assert not d.is_duplicate([1, 2, 3, 4, 1, 2, 3])  # repeats inside one sample are fine
    assert d.is_duplicate([9, 2, 3, 4])  # dropped: its n-grams are not recorded
    assert not d.is_duplicate([7, 8, 9, 5])


def test_template_tokens_are_masked():
    d = NgramDedup(3)
    template = [100, 101, 102, 103]
    types_t = [S, T, T, T]
    first = template + [1, 2, 3] + template + [4, 5, 6]
    types = types_t + [U, U, U] + types_t + [A, A, A]
    second = template + [7, 8, 9] + template + [10, 11, 12]
    assert not d.is_duplicate(first, types)
    assert not d.is_duplicate(second, types)  # shares only template n-grams
    assert NgramDedup(3).is_duplicate(second) is False
    unmasked = NgramDedup(3)
    unmasked.is_duplicate(first)
    assert unmasked.is_duplicate(second)  # without types the template makes it a duplicate
    with pytest.raises(ValueError):
        d.is_duplicate([1, 2], [U])


def test_short_samples_are_keyed_by_their_whole_content():
    d = NgramDedup(20)
    assert not d.is_duplicate([5, 6, 7])
    assert d.is_duplicate([5, 6, 7])
    assert not d.is_duplicate([5, 6])
    assert not d.is_duplicate([], [])  # nothing to compare: never a duplicate
    assert not d.is_duplicate([1, 2, 3], [T, S, T])


def test_hashes_are_deterministic_across_processes():
    ids = list(range(30))
    here = ngram_hashes(ids, 5).tolist()
    code = "from harvest.dedup import ngram_hashes; print(ngram_hashes(list(range(30)), 5).tolist())"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == str(here)
    assert len(set(here)) == len(here) == 26 and ngram_hashes(ids, 5).dtype == np.uint64


def test_bad_n():
    for n in (0, -1, 2.5):
        with pytest.raises(ValueError):
            NgramDedup(n)
