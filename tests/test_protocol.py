"""The Copy protocol's options (Table 2 calibration): batch-row phase and the curriculum's unit."""

import math

import numpy as np
import pytest

from minidni.tasks import CopyTaskStream, Curriculum


@pytest.mark.parametrize("task, level, steps", [("copy", 0, 2), ("copy", 3, 5), ("repeat_copy", 2, 5),
                                                ("repeat_copy", 3, 7)])
def test_scored_steps_count_the_mask(task, level, steps):
    """N+1 (Copy) or N*R+1 (Repeat Copy) scored steps: the stream's own mask agrees."""
    cur = Curriculum(task)
    cur.level = level
    cur.lengths()
    assert cur.scored_steps() == steps
    stream = CopyTaskStream(cur, 1, rng=np.random.default_rng(0), stagger=False)
    w = stream.next_window(cur.num_steps())
    assert w.mask.sum() == steps and w.episode_end[-1, 0]


def test_units_divide_the_episode_total():
    ep, st, bit = (Curriculum("copy", unit=u, window=1) for u in ("episode", "step", "bit"))
    assert ep.per_unit(6.0) == 6.0 and st.per_unit(6.0) == 3.0 and math.isclose(bit.per_unit(6.0), 6.0 / 18)
    # 0.2 bits in an N=1 episode: not solved per episode, solved per step (0.1 < 0.15)
    assert not ep.update([(0.2, 0)]) and st.update([(0.2, 0)]) and st.solved_level == 0


def test_old_checkpoints_without_a_unit_load_as_per_episode():
    cur = Curriculum("copy")
    state = cur.state_dict()
    del state["config"]["unit"]
    Curriculum("copy").load_state_dict(state)
    with pytest.raises(ValueError, match="curriculum state"):
        Curriculum("copy", unit="step").load_state_dict(state)


def test_aligned_rows_stay_in_phase_through_level_changes():
    cur = Curriculum("copy", window=2)
    stream = CopyTaskStream(cur, 5, rng=np.random.default_rng(0), stagger=False)
    for _ in range(20):
        w = stream.next_window(3)
        assert (w.episode_end == w.episode_end[:, :1]).all() and (w.level == w.level[:, :1]).all()
        ends = [(0.0, int(w.level[t, 0])) for t in range(3) if w.episode_end[t, 0]]
        cur.update(ends * 5)
    assert cur.level >= 2  # the levels did change on the way


def test_copy_command_records_the_protocol(tmp_path):
    import json

    from minidni.experiments.recurrent import main_copy

    assert main_copy(["--steps", "4", "--hidden", "4", "--batch", "2", "--no-compare", "--no-progress",
                      "--phase", "aligned", "--curriculum-unit", "bit", "--curriculum-window", "7",
                      "--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["options"]["phase"] == "aligned" and s["curriculum"]["config"]["unit"] == "bit"
    assert s["curriculum"]["config"]["window"] == 7
