"""Copy / Repeat Copy streams, the curriculum, and the character-stream helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidni.backend import to_numpy
from minidni.tasks import (BPCMeter, CharStream, CopyTaskStream, Curriculum, EpisodeScorer,
                           copy_episode, nats_to_bits, one_hot, repeat_copy_episode, sequence_bits)

V = [[1, 0, 1, 1, 0, 0, 1, 0],
     [0, 1, 1, 0, 1, 0, 0, 1]]


def _row(bits, stop=0.0, rep=0.0):
    return list(bits) + [stop, rep]


# -- episode encodings ----------------------------------------------------------------------
def test_copy_episode_golden():
    x, y, m = copy_episode(V)
    z8 = [0] * 8
    np.testing.assert_array_equal(x, np.array([
        _row(V[0]), _row(V[1]), _row(z8, stop=1), _row(z8), _row(z8), _row(z8)], np.float32))
    np.testing.assert_array_equal(y, np.array([
        z8 + [0], z8 + [0], z8 + [0], V[0] + [0], V[1] + [0], z8 + [1]], np.float32))
    np.testing.assert_array_equal(m, [0, 0, 0, 1, 1, 1])
    assert x.dtype == y.dtype == m.dtype == np.float32


def test_repeat_copy_episode_golden():
    x, y, m = repeat_copy_episode(V, repeats=2, max_repeats=4)
    z8 = [0] * 8
    assert x.shape == (2 * 3 + 3, 10)      # N(R+1)+3 steps
    np.testing.assert_array_equal(x, np.array([
        _row(V[0]), _row(V[1]), _row(z8, stop=1), _row(z8, rep=0.5)] + [_row(z8)] * 5, np.float32))
    np.testing.assert_array_equal(y, np.array(
        [z8 + [0]] * 4 + [V[0] + [0], V[1] + [0], V[0] + [0], V[1] + [0], z8 + [1]], np.float32))
    np.testing.assert_array_equal(m, [0, 0, 0, 0, 1, 1, 1, 1, 1])


def test_episode_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \(N >= 1, 8\)"):
        copy_episode(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        copy_episode(np.full((2, 8), 2))
    with pytest.raises(ValueError, match="repeats=5 is outside 1..max_repeats=4"):
        repeat_copy_episode(V, repeats=5, max_repeats=4)


# -- streams --------------------------------------------------------------------------------
def _concat(windows):
    return [np.concatenate([w[i] for w in windows]) for i in range(5)]


@given(seed=st.integers(0, 2**31), task=st.sampled_from(["copy", "repeat_copy"]),
       batch=st.integers(1, 5), start=st.integers(1, 3), stagger=st.booleans())
def test_stream_is_continuous_across_windows(seed, task, batch, start, stagger):
    def make():
        cur = Curriculum(task, start_length=start, start_repeats=min(start, 2))
        return CopyTaskStream(cur, batch, rng=np.random.default_rng(seed), stagger=stagger)
    a, b = make(), make()
    small = _concat([a.next_window(3) for _ in range(3)] + [a.next_window(1)])
    big = _concat([b.next_window(9), b.next_window(1)])
    for s, g in zip(small, big):
        np.testing.assert_array_equal(s, g)


def test_stream_positions_without_stagger():
    cur = Curriculum("copy", start_length=2)
    w = CopyTaskStream(cur, 3, rng=np.random.default_rng(1), stagger=False).next_window(13)
    L = 6                                   # 2N+2
    t = np.arange(13)
    for b in range(3):
        np.testing.assert_array_equal(w.episode_end[:, b], t % L == L - 1)
        np.testing.assert_array_equal(w.mask[:, b], (t % L >= 3).astype(np.float32))
        np.testing.assert_array_equal(w.x[:, b, 8], (t % L == 2).astype(np.float32))
        # each output phase repeats the episode's inputs, then the end marker
        for s in (0, L):
            np.testing.assert_array_equal(w.target[s + 3:s + 5, b, :8], w.x[s:s + 2, b, :8])
            assert w.target[s + 5, b, 8] == 1 and w.target[s:s + 5, b, 8].sum() == 0
    assert w.x.shape == (13, 3, 10) and w.target.shape == (13, 3, 9)
    assert w.x.dtype == w.target.dtype == w.mask.dtype == np.float32 and w.episode_end.dtype == bool


def test_stagger_puts_rows_out_of_phase():
    cur = Curriculum("repeat_copy", start_length=2, start_repeats=2)
    L = cur.num_steps()                     # 9
    w = CopyTaskStream(cur, 16, rng=np.random.default_rng(3)).next_window(3 * L)
    firsts = []
    for b in range(16):
        ends = np.flatnonzero(w.episode_end[:, b])
        assert L - 1 <= ends[0] <= 2 * L - 2 and np.all(np.diff(ends) == L)
        idle = ends[0] - (L - 1)
        assert w.mask[:max(idle, 0), b].sum() == 0 and w.x[:max(idle, 0), b].sum() == 0
        firsts.append(ends[0])
    assert len(set(firsts)) > 3


def test_level_change_reaches_each_row_at_its_next_episode():
    cur = Curriculum("copy", start_length=1, window=1)
    stream = CopyTaskStream(cur, 3, rng=np.random.default_rng(5), stagger=False)
    w0 = stream.next_window(2)               # every row is half way through a 4-step episode
    assert cur.update([(0.0, 0)]) and cur.lengths() == (2, 1)
    w1 = stream.next_window(14)
    level = np.concatenate([w0.level, w1.level])
    end = np.concatenate([w0.episode_end, w1.episode_end])
    for b in range(3):
        np.testing.assert_array_equal(level[:, b], [0] * 4 + [1] * 12)
        np.testing.assert_array_equal(np.flatnonzero(end[:, b]), [3, 9, 15])


def test_checkpoint_restore_continues_identically():
    def make():
        cur = Curriculum("repeat_copy", window=4, threshold=0.15)
        return cur, CopyTaskStream(cur, 6, rng=np.random.default_rng(11)), EpisodeScorer(6)

    def step(cur, stream, scorer, k):
        w = stream.next_window(4)
        # a fake model whose error shrinks with time, so the curriculum moves
        bits = w.mask * (0.5 / (1 + k))
        cur.update(scorer.update(bits, w.episode_end, w.level))
        return w

    cur, stream, scorer = make()
    for k in range(20):
        step(cur, stream, scorer, k)
    saved = json.loads(json.dumps({"cur": cur.state_dict(), "stream": stream.state_dict(),
                                   "scorer": scorer.state_dict()}))
    cur2, stream2, scorer2 = make()
    cur2.load_state_dict(saved["cur"])
    stream2.load_state_dict(saved["stream"])
    scorer2.load_state_dict(saved["scorer"])
    assert cur.level > 0
    for k in range(20, 40):
        wa, wb = step(cur, stream, scorer, k), step(cur2, stream2, scorer2, k)
        for a, b in zip(wa, wb):
            np.testing.assert_array_equal(a, b)
    assert cur.state_dict() == cur2.state_dict()
    assert Curriculum.from_state_dict(saved["cur"]).state_dict() == saved["cur"]


def test_stream_bad_inputs():
    cur = Curriculum("copy")
    with pytest.raises(ValueError, match="batch_size=0"):
        CopyTaskStream(cur, 0, rng=np.random.default_rng(0))
    stream = CopyTaskStream(cur, 2, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="T=0"):
        stream.next_window(0)
    with pytest.raises(ValueError, match="batch size 2"):
        CopyTaskStream(cur, 3, rng=np.random.default_rng(0)).load_state_dict(stream.state_dict())


# -- scoring --------------------------------------------------------------------------------
def test_sequence_bits_matches_definition_and_is_stable(xp):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 3, 9)).astype(np.float32)
    z[0, 0, :2] = [1e4, -1e4]
    t = (rng.random((4, 3, 9)) < 0.5).astype(np.float32)
    m = (rng.random((4, 3)) < 0.7).astype(np.float32)
    got = sequence_bits(xp.asarray(z), xp.asarray(t), xp.asarray(m))
    assert got.dtype == np.float32 and got.shape == (4, 3)
    z64 = z.astype(np.float64)
    want = (np.logaddexp(0.0, z64) - t * z64).sum(axis=2) / math.log(2) * m
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-5)


def test_sequence_bits_one_bit_per_channel_at_zero_logits():
    z = np.zeros((2, 1, 9), np.float32)
    got = sequence_bits(z, np.ones_like(z), np.array([[1.0], [0.0]], np.float32))
    np.testing.assert_allclose(got, [[9.0], [0.0]], rtol=1e-6)


def test_scorer_sums_episodes_across_windows():
    scorer = EpisodeScorer(2)
    bits1 = np.array([[1.0, 0.5], [2.0, 0.5], [4.0, 0.5]])
    end1 = np.array([[False, False], [True, False], [False, False]])
    lvl = np.zeros((3, 2), np.int64)
    done = scorer.update(bits1, end1, lvl)
    assert [(e.bits, e.row) for e in done] == [(3.0, 0)]
    bits2 = np.array([[8.0, 0.5], [16.0, 0.5], [0.0, 0.5]])
    end2 = np.array([[False, True], [True, False], [False, True]])
    done = scorer.update(bits2, end2, lvl + 1)
    assert [(e.bits, e.level, e.row) for e in done] == [(2.0, 1, 1), (28.0, 1, 0), (1.0, 1, 1)]
    assert scorer.state_dict() == {"partial": [0.0, 0.0]}
    with pytest.raises(ValueError, match=r"must all be \(T, 2\)"):
        scorer.update(bits2[:, :1], end2[:, :1], lvl[:, :1])


@given(seed=st.integers(0, 2**31), batch=st.integers(1, 6), split=st.integers(1, 7))
def test_scorer_matches_a_direct_sum_over_each_episode(seed, batch, split):
    rng = np.random.default_rng(seed)
    stream = CopyTaskStream(Curriculum("copy", start_length=2), batch, rng=rng)
    w = stream.next_window(30)
    bits = rng.random((30, batch)) * w.mask
    scorer = EpisodeScorer(batch)
    got = []
    for start in range(0, 30, split):
        sl = slice(start, start + split)
        got += scorer.update(bits[sl], w.episode_end[sl], w.level[sl])
    want = []
    for t, b in zip(*np.nonzero(w.episode_end)):
        previous = np.flatnonzero(w.episode_end[:t, b])
        first = previous[-1] + 1 if previous.size else 0
        want.append((bits[first:t + 1, b].sum(), 0, b))
    assert [(e.level, e.row) for e in got] == [(lv, b) for _, lv, b in want]
    np.testing.assert_allclose([e.bits for e in got], [x for x, _, _ in want], rtol=1e-12, atol=1e-12)


# -- curriculum -----------------------------------------------------------------------------
def test_curriculum_grows_below_threshold_only():
    cur = Curriculum("copy", window=3, threshold=0.15)
    assert not cur.update([(0.1, 0), (0.1, 0)])          # window not yet full
    assert not cur.update([(0.2, 1)])                    # another level's episode: ignored
    assert cur.recent_count == 2
    assert cur.update([(0.1, 0)])                        # full, mean 0.1 < 0.15
    assert cur.level == 1 and cur.solved_level == 0 and cur.lengths() == (2, 1)
    assert cur.recent_count == 0
    assert not cur.update([(0.1, 1), (0.2, 1), (0.2, 1)])  # mean 0.1667 >= 0.15: stays
    assert cur.level == 1 and cur.max_episode_length == 4
    assert not cur.update([(0.15, 1)])                   # window slides: mean of 0.2, 0.2, 0.15
    assert cur.update([(0.0, 1), (0.0, 1)])              # mean of 0.15, 0, 0 = 0.05
    assert cur.level == 2 and cur.max_episode_length == 5


def test_max_episode_length_formula():
    copy = Curriculum("copy", start_length=4)
    assert copy.max_episode_length == 0
    assert [copy.episode_length(k) for k in range(3)] == [7, 8, 9]
    assert [copy.num_steps(k) for k in range(3)] == [10, 12, 14]
    rep = Curriculum("repeat_copy")
    path = [rep.lengths(k) for k in range(9)]
    assert path == [(1, 1), (2, 1), (2, 2), (3, 2), (3, 3), (4, 3), (4, 4), (5, 4), (5, 5)]
    lengths = {rep.episode_length(k) for k in range(15)}
    assert {5, 7, 19, 23, 33, 39, 59, 67} <= lengths     # every Repeat Copy entry of Table 2
    assert rep.num_steps(4) == 3 * 4 + 3
    rep.update([(0.0, 0)] * 100)
    rep.update([(0.0, 1)] * 100)
    assert rep.max_episode_length == 2 * 1 + 3 and rep.lengths() == (2, 2)


def test_curriculum_caps():
    fixed = Curriculum("copy", start_length=2, max_length=2, window=2)
    assert fixed.exhausted
    assert not fixed.update([(0.0, 0), (0.0, 0)])
    assert fixed.level == 0 and fixed.solved_level == 0 and fixed.max_episode_length == 5
    rep = Curriculum("repeat_copy", max_repeats=2, max_length=4)
    # R stops at 2, so N grows instead; then both are capped
    assert [rep.lengths(k) for k in range(5)] == [(1, 1), (2, 1), (2, 2), (3, 2), (4, 2)]
    with pytest.raises(ValueError, match="level 5 does not exist"):
        rep.lengths(5)


def test_curriculum_bad_inputs_and_state_mismatch():
    with pytest.raises(ValueError, match="task='bogus'"):
        Curriculum("bogus")
    with pytest.raises(ValueError, match="threshold=-1"):
        Curriculum(threshold=-1)
    with pytest.raises(ValueError, match="window=0"):
        Curriculum(window=0)
    with pytest.raises(ValueError, match="not finite"):
        Curriculum().update([(math.nan, 0)])
    with pytest.raises(ValueError, match="saved with"):
        Curriculum(window=5).load_state_dict(Curriculum(window=6).state_dict())


# -- character streams ----------------------------------------------------------------------
def test_char_stream_layout_and_passes():
    ids = np.arange(23)
    s = CharStream(ids, 4)                  # m = (23 - 1) // 4 = 5 steps per row
    assert s.steps_per_pass == 5 and s.n_chars == 20 and s.windows_per_pass(2) == 3
    ws = [s.next_window(2) for _ in range(3)]
    assert [w.x.shape for w in ws] == [(2, 4), (2, 4), (1, 4)]
    assert [w.first for w in ws] == [True, False, False]
    x = np.concatenate([w.x for w in ws])
    y = np.concatenate([w.y for w in ws])
    np.testing.assert_array_equal(x.T, np.arange(20).reshape(4, 5))
    np.testing.assert_array_equal(y, x + 1)
    assert x.dtype == np.int64
    state = s.state_dict()
    again = s.next_window(2)
    assert again.first and s.passes == 1
    np.testing.assert_array_equal(again.x, ws[0].x)
    s2 = CharStream(ids, 4)
    s2.load_state_dict(state)
    np.testing.assert_array_equal(s2.next_window(2).y, again.y)
    assert sum(w.x.size for w in CharStream(ids, 4).iter_pass(3)) == 20


def test_char_stream_bad_inputs():
    with pytest.raises(ValueError, match="too few"):
        CharStream(np.arange(4), 4)
    with pytest.raises(ValueError, match="1-D integer"):
        CharStream(np.zeros(10), 2)
    with pytest.raises(ValueError, match="outside 0..5"):
        CharStream(np.arange(11), 2).load_state_dict({"batch_size": 2, "steps_per_pass": 5,
                                                     "pos": 6, "passes": 0})


def test_one_hot(xp):
    ids = np.array([[0, 2], [1, 2]])
    oh = one_hot(ids, 3, xp=xp)
    assert oh.shape == (2, 2, 3) and oh.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(oh).argmax(-1), ids)
    np.testing.assert_array_equal(to_numpy(oh).sum(-1), 1)
    with pytest.raises(ValueError, match="id 3 is outside the vocabulary 0..2"):
        one_hot(np.array([3]), 3)


def test_bits_per_character():
    assert nats_to_bits(math.log(2)) == pytest.approx(1.0)
    meter = BPCMeter()
    assert math.isnan(meter.bpc)
    meter.add(np.float32(math.log(2) * 1.0), 10)
    meter.add(np.asarray(math.log(2) * 4.0), 30)
    assert meter.bpc == pytest.approx((10 * 1.0 + 30 * 4.0) / 40, rel=1e-6)
