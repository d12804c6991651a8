"""``memory_bank.select`` and ``write`` choose the memories the official tracker chooses.

The official choice is read off the REAL ``SAM2Base._prepare_memory_conditioned_features`` (the official tiny video
predictor at 256 px, a 16x16 grid) called on a crafted ``output_dict`` whose entries are tagged with their frame:
memory features and object pointers filled with a tag, zero spatial encodings. The model's memory attention is
replaced by a recorder, and its ``memory`` / ``memory_pos`` / ``num_obj_ptr_tokens`` are decoded into
  - memories: (frame, temporal row), the row being the ``maskmem_tpos_enc`` row that the chunk's position equals;
  - pointers: (frame, offset / normaliser), matched against the official encoding of every candidate fraction.
Ours is the same read off a ``MemoryBank`` whose features and pointers carry the same tags and the ``Selection``,
with the rows and normalised offsets that ``steps.condition_on_memory`` encodes (cond frames: offset 0, i.e. the
last row; recent frames: row distance - 1; pointers: offset / (max_pointers - 1)).

Tags are ``frame + 1 + 100 * generation`` (exact in bfloat16): generation 1 marks a memory written by tracking
over an older one of the same frame, so a stale slot cannot pass for the new memory.
"""

from __future__ import annotations

import random
from fractions import Fraction

import jax
import numpy as np
import pytest

from sam2_jax.tracking.memory_bank import bucket_of, empty_bank, select, write

GRID = 16  # 256 px / 16
MAX_FRAMES = 64  # the longest video of these tests (tags stay below 256, exact in bfloat16)


def tag(frame: int, gen: int = 0) -> float:
    return float(frame + 1 + 100 * gen)


def untag(value: float) -> tuple[int, int]:
    v = int(round(float(value))) - 1
    assert v >= 0 and float(value) == v + 1, f"not a tag: {value}"
    return v % 100, v // 100


def squared_distances(a, b):
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0)


# ---- the official selection ------------------------------------------------------------------------------------
class Official:
    """The official tiny video predictor (256 px) with a recording memory attention."""

    def __init__(self):
        import torch
        from reference import official_video_predictor
        from sam2.modeling.sam2_utils import get_1d_sine_pe

        self.torch = torch
        self.model = m = official_video_predictor(image_size=256)
        self.captured = None

        def record(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
            self.captured = (memory.detach(), memory_pos.detach(), int(num_obj_ptr_tokens))
            return curr[0]

        m.memory_attention.forward = record
        self.num_maskmem, self.mem_dim, self.hidden = m.num_maskmem, m.mem_dim, m.hidden_dim
        self.entries, self.zeros = {}, torch.zeros(1, m.mem_dim, GRID, GRID)
        self.rows = m.maskmem_tpos_enc.detach().reshape(m.num_maskmem, m.mem_dim).numpy()
        # every candidate normalised pointer offset k / d the official can encode (d = min(num_frames, 16) - 1)
        candidates = {}
        with torch.no_grad():
            ks = torch.arange(-MAX_FRAMES, MAX_FRAMES + 1)
            for d in range(1, m.max_obj_ptrs_in_encoder):
                pe = m.obj_ptr_tpos_proj(get_1d_sine_pe(ks / d, dim=self.hidden)).numpy()
                for k, v in zip(ks.tolist(), pe, strict=True):
                    candidates.setdefault(Fraction(k, d), v)
        self.fractions = list(candidates)
        self.candidates = np.stack(list(candidates.values())).astype(np.float64)
        gaps = squared_distances(self.candidates, self.candidates)
        np.fill_diagonal(gaps, np.inf)
        self.separation = float(np.sqrt(gaps.min()))  # distinct fractions have distinct encodings
        assert self.separation > 1e-3

    def select(self, t: int, reverse: bool, num_frames: int, cond: dict, non_cond: dict):
        """cond / non_cond: {frame: generation}. -> (sorted memories (frame, gen, row), sorted pointers
        (frame, gen, Fraction offset / normaliser))."""
        torch = self.torch
        c, m, g = self.hidden, self.mem_dim, GRID

        def entry(f, gen):
            if (f, gen) not in self.entries:
                self.entries[f, gen] = {
                    "maskmem_features": torch.full((1, m, g, g), tag(f, gen)),
                    "maskmem_pos_enc": [self.zeros],
                    "obj_ptr": torch.full((1, c), tag(f, gen)),
                }
            return self.entries[f, gen]

        output_dict = {
            "cond_frame_outputs": {f: entry(f, gen) for f, gen in cond.items()},
            "non_cond_frame_outputs": {f: entry(f, gen) for f, gen in non_cond.items()},
        }
        feats = [torch.zeros(g * g, 1, c)]  # not read by the recorder
        self.captured = None
        with torch.no_grad():
            self.model._prepare_memory_conditioned_features(
                frame_idx=t,
                is_init_cond_frame=False,
                current_vision_feats=feats,
                current_vision_pos_embeds=feats,
                feat_sizes=[(g, g)],
                output_dict=output_dict,
                num_frames=num_frames,
                track_in_reverse=reverse,
            )
        memory, pos, n_ptr = self.captured
        memory, pos = memory[:, 0].numpy(), pos[:, 0].numpy()
        n_mem = memory.shape[0] - n_ptr
        assert n_mem % (g * g) == 0
        memories = []
        for chunk in range(n_mem // (g * g)):
            sl = slice(chunk * g * g, (chunk + 1) * g * g)
            values, positions = memory[sl], pos[sl]
            assert (values == values[0, 0]).all()
            assert (positions == positions[:1]).all()  # zero spatial encoding + one temporal row
            rows = [r for r in range(self.num_maskmem) if np.array_equal(positions[0], self.rows[r])]
            assert len(rows) == 1
            memories.append((*untag(values[0, 0]), rows[0]))
        pointers = []
        split = c // m
        assert n_ptr % split == 0
        values, positions = memory[n_mem:].reshape(-1, split, m), pos[n_mem:].reshape(-1, split, m)
        assert (values == values[:, :1, :1]).all() and (positions == positions[:, :1]).all()
        if len(positions):
            dist = np.sqrt(squared_distances(positions[:, 0].astype(np.float64), self.candidates))
            best = dist.argmin(axis=1)
            err = dist[np.arange(len(best)), best]
            assert (err < 1e-3 * self.separation).all(), f"pointer positions match no candidate ({err.max()})"
            pointers = [(*untag(v), self.fractions[b]) for v, b in zip(values[:, 0, 0], best, strict=True)]
        return sorted(memories), sorted(pointers)


@pytest.fixture(scope="module")
def official():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only cost here
    try:
        yield Official()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def config(official):
    from reference import tiny_video_test_config

    config = tiny_video_test_config()
    v, m = config.video_config, official.model
    # the official options that drive the selection agree with ours
    assert v.num_maskmem == m.num_maskmem
    assert v.max_object_pointers_in_encoder == m.max_obj_ptrs_in_encoder
    assert v.max_cond_frames_in_attn == m.max_cond_frames_in_attn == -1
    assert v.use_signed_tpos_enc_to_obj_ptrs == m.use_signed_tpos_enc_to_obj_ptrs
    assert v.only_obj_ptrs_in_the_past_for_eval == m.only_obj_ptrs_in_the_past_for_eval
    assert v.add_tpos_enc_to_obj_ptrs == m.add_tpos_enc_to_obj_ptrs
    assert v.memory_encoder_output_channels == m.mem_dim
    assert m.memory_temporal_stride_for_eval == 1 and not m.training and m.use_obj_ptrs_in_encoder
    return config


@pytest.fixture(scope="module")
def ours(config):
    sel = jax.jit(lambda bank, t, reverse, n: select(bank, t, reverse, n, config))
    wr = jax.jit(write)
    return config, sel, wr


# ---- our selection ---------------------------------------------------------------------------------------------
def build_bank(config, objects):
    """objects: list of dicts {"cond": {f: gen}, "recent": [(f, gen)], "pointers": [(f, gen)]} -> host bank."""
    o = bucket_of(len(objects))
    kc = bucket_of(max(len(ob["cond"]) for ob in objects))
    bank = empty_bank(config, o, kc)
    r, p = bank.recent_frames.shape[1], bank.pointer_frames.shape[1]
    for i, ob in enumerate(objects):
        assert len(ob["recent"]) <= r and len(ob["pointers"]) <= p
        for k, (f, gen) in enumerate(ob["cond"].items()):
            bank.cond_frames[i, k] = f
            bank.cond_features[i, k] = tag(f, gen)
            bank.cond_pointers[i, k] = tag(f, gen)
        for k, (f, gen) in enumerate(ob["recent"]):
            bank.recent_frames[i, k] = f
            bank.recent_features[i, k] = tag(f, gen)
        for k, (f, gen) in enumerate(ob["pointers"]):
            bank.pointer_frames[i, k] = f
            bank.pointers[i, k] = tag(f, gen)
    return bank


def decode_ours(config, bank, sel, obj: int):
    """One object's selection as (memories, pointers), read off the tags of the selected bank entries."""
    n = config.video_config.num_maskmem
    bank, sel = jax.device_get(bank), jax.device_get(sel)

    def feature_tag(x):
        x = np.asarray(x, np.float32)
        assert (x == x.flat[0]).all()
        return untag(x.flat[0])

    # temporal rows as condition_on_memory encodes them: offset 0 for cond frames, distance for recent ones,
    # row = offset - 1 (Python indexing: 0 -> the last row)
    memories = [
        (*feature_tag(bank.cond_features[obj, k]), (0 - 1) % n)
        for k in range(bank.cond_frames.shape[1])
        if sel.cond_memory[obj, k]
    ]
    memories += [
        (*feature_tag(bank.recent_features[obj, k]), int(sel.recent_distance[obj, k]) - 1)
        for k in range(bank.recent_frames.shape[1])
        if sel.recent[obj, k]
    ]
    norm = int(sel.max_pointers) - 1
    pointers = [
        (*feature_tag(bank.cond_pointers[obj, k]), Fraction(int(sel.cond_offset[obj, k]), norm))
        for k in range(bank.cond_frames.shape[1])
        if sel.cond_pointer[obj, k]
    ]
    pointers += [
        (*feature_tag(bank.pointers[obj, k]), Fraction(int(sel.pointer_offset[obj, k]), norm))
        for k in range(bank.pointer_frames.shape[1])
        if sel.pointer[obj, k]
    ]
    # the bank's slot frames agree with what the slots hold
    for k in range(bank.recent_frames.shape[1]):
        if sel.recent[obj, k]:
            assert feature_tag(bank.recent_features[obj, k])[0] == bank.recent_frames[obj, k]
    for k in range(bank.pointer_frames.shape[1]):
        if sel.pointer[obj, k]:
            assert feature_tag(bank.pointers[obj, k])[0] == bank.pointer_frames[obj, k]
    return sorted(memories), sorted(pointers)


def bank_slots(rng, t, reverse, num_frames, cond, non_cond, r, p, distractors=True):
    """What our tracker holds for frame t (official ``output_dict`` -> bank): the non-cond frames 1..r (1..p)
    behind t in recent (pointer) slots, plus, if slots are left, distractors that must not be selected: frames ahead
    of t, t itself, frames too far behind (in the dict or not)."""
    sign = -1 if reverse else 1

    def behind(f):
        return (t - f) * sign

    recent = [(f, g) for f, g in non_cond.items() if 1 <= behind(f) <= r]
    pointers = [(f, g) for f, g in non_cond.items() if 1 <= behind(f) <= p]
    if distractors:
        others = [f for f in range(num_frames) if f not in cond]
        for slots, reach in ((recent, r), (pointers, p)):
            pool = [(f, non_cond.get(f, rng.randint(0, 1))) for f in others if not 1 <= behind(f) <= reach]
            rng.shuffle(pool)
            slots += pool[: rng.randint(0, reach - len(slots))]
    rng.shuffle(recent)
    rng.shuffle(pointers)
    return recent, pointers


def check_case(official, ours, t, reverse, num_frames, objects, rng):
    """objects: list of (cond {f: gen}, non_cond {f: gen}) sharing t, reverse, num_frames; one bank for all."""
    config, sel_fn, _ = ours
    r, p = config.video_config.num_maskmem - 1, config.video_config.max_object_pointers_in_encoder - 1
    slots = []
    for cond, non_cond in objects:
        recent, pointers = bank_slots(rng, t, reverse, num_frames, cond, non_cond, r, p)
        slots.append({"cond": cond, "recent": recent, "pointers": pointers})
    bank = build_bank(config, slots)
    sel = sel_fn(bank, t, reverse, num_frames)
    for i, (cond, non_cond) in enumerate(objects):
        expected = official.select(t, reverse, num_frames, cond, non_cond)
        got = decode_ours(config, bank, sel, i)
        assert got == expected, f"object {i}: t={t} reverse={reverse} n={num_frames} cond={cond} non_cond={non_cond}"
    # padded objects select nothing
    s = jax.device_get(sel)
    for i in range(len(objects), bank.cond_frames.shape[0]):
        assert not (s.cond_memory[i].any() or s.cond_pointer[i].any() or s.recent[i].any() or s.pointer[i].any())


# ---- cases -----------------------------------------------------------------------------------------------------
def _frames(*fs):
    return {f: 0 for f in fs}


# (id, num_frames, t, reverse, [(cond frames, non-cond frames), ...]). No 1-frame video: there the official
# normaliser min(num_frames, 16) - 1 is 0 and its pointer positions are 0 / 0 = NaN (ours clamps it to 1).
EDGE_CASES = [
    ("fwd_t0_cond_after", 10, 0, False, [((3,), (1, 2, 5, 9))]),
    ("rev_tlast_cond_before", 10, 9, True, [((2,), (0, 5, 7, 8))]),
    ("fwd_tlast_dense", 12, 11, False, [((0,), range(1, 11))]),
    ("rev_t0_dense", 12, 0, True, [((11,), range(1, 11))]),
    ("fwd_t1", 30, 1, False, [((0, 20), (2, 3, 4))]),
    ("rev_tn2", 30, 28, True, [((29, 5), (25, 26, 27))]),
    ("n2_fwd", 2, 1, False, [((0,), ())]),
    ("n2_rev", 2, 0, True, [((1,), ())]),
    ("n3_fwd", 3, 2, False, [((0,), (1,))]),
    ("n3_rev", 3, 0, True, [((2,), (1,))]),
    ("n3_mid_fwd", 3, 1, False, [((2,), (0,))]),
    ("n3_mid_rev", 3, 1, True, [((0,), (2,))]),
    ("n5_both_sides_fwd", 5, 2, False, [((0, 4), (1, 3))]),
    ("n5_both_sides_rev", 5, 2, True, [((0, 4), (1, 3))]),
    ("n5_cond_at_t", 5, 3, False, [((3, 0), (1, 2, 4))]),
    ("cond_at_t_fwd", 20, 10, False, [((10, 3), (8, 9, 11))]),
    ("cond_at_t_rev", 20, 10, True, [((10, 17), (9, 11, 12))]),
    ("no_non_cond_fwd", 30, 15, False, [((0, 29), ())]),
    ("no_non_cond_rev", 30, 15, True, [((0, 29), ())]),
    ("non_cond_only_ahead_fwd", 30, 10, False, [((0,), range(11, 30))]),
    ("non_cond_only_ahead_rev", 30, 10, True, [((29,), range(0, 10))]),
    ("t_itself_non_cond", 20, 7, False, [((0,), range(1, 20))]),
    ("gaps_fwd", 40, 30, False, [((0, 35), (29, 27, 24, 23, 20, 16, 15, 14, 10, 33))]),
    ("gaps_rev", 40, 9, True, [((39, 4), (10, 12, 15, 16, 19, 23, 24, 25, 29, 6))]),
    ("n16_fwd", 16, 15, False, [((0,), range(1, 15))]),
    ("n17_fwd", 17, 16, False, [((0,), range(1, 16))]),
    ("n17_rev", 17, 0, True, [((16,), range(1, 16))]),
    ("n15_rev", 15, 0, True, [((14, 7), (1, 2, 3, 5, 6, 8, 13))]),
    ("far_long_fwd", 64, 50, False, [((0, 63, 49, 51), range(1, 63, 2))]),
    ("many_cond", 50, 25, False, [((0, 5, 10, 20, 24, 26, 30, 49), (21, 22, 23, 27, 28, 40))]),
    ("many_cond_rev", 50, 25, True, [((0, 5, 10, 20, 24, 26, 30, 49), (21, 22, 23, 27, 28, 40))]),
    (
        "three_objects",
        40,
        20,
        False,
        [((0,), range(1, 40)), ((25, 30), (19, 18, 12, 5)), ((20, 2), ())],
    ),
    ("three_objects_rev", 40, 20, True, [((39,), range(0, 39)), ((5, 10), (21, 23, 35)), ((20, 37), ())]),
]


@pytest.mark.parametrize("num_frames,t,reverse,objects", [c[1:] for c in EDGE_CASES], ids=[c[0] for c in EDGE_CASES])
def test_select_edge_cases(official, ours, num_frames, t, reverse, objects):
    objects = [(_frames(*c), {f: 0 for f in nc if f not in c}) for c, nc in objects]
    check_case(official, ours, t, reverse, num_frames, objects, random.Random(0))


def random_case(rng: random.Random):
    num_frames = rng.choice([rng.randint(2, 6), rng.randint(7, 20), rng.randint(21, MAX_FRAMES)])
    reverse = rng.random() < 0.5
    if rng.random() < 0.35:  # at or near either end
        t = min(max(rng.choice([0, 1, 2, num_frames - 3, num_frames - 2, num_frames - 1]), 0), num_frames - 1)
    else:
        t = rng.randrange(num_frames)
    objects = []
    for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):  # 5 objects: a padded bank row
        before, after = list(range(t)), list(range(t + 1, num_frames))
        pattern = rng.choice(["before", "after", "both", "at", "random"])
        cond = set()
        if pattern in ("before", "both") and before:
            cond |= set(rng.sample(before, rng.randint(1, min(3, len(before)))))
        if pattern in ("after", "both") and after:
            cond |= set(rng.sample(after, rng.randint(1, min(3, len(after)))))
        if pattern == "at" or rng.random() < 0.1:
            cond.add(t)
        if pattern == "random" or not cond:
            cond |= set(rng.sample(range(num_frames), rng.randint(1, min(4, num_frames))))
        density = rng.choice([0.0, 0.3, 0.6, 0.9, 1.0])
        non_cond = {f: rng.randint(0, 1) for f in range(num_frames) if f not in cond and rng.random() < density}
        objects.append(({f: rng.randint(0, 1) for f in sorted(cond)}, non_cond))
    return num_frames, t, reverse, objects


@pytest.mark.parametrize("seed", range(160))
def test_select_random(official, ours, seed):
    rng = random.Random(seed)
    num_frames, t, reverse, objects = random_case(rng)
    check_case(official, ours, t, reverse, num_frames, objects, rng)


# ---- write: a bank tracked frame by frame holds what the official dict makes selectable --------------------------
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("retrack", [False, True], ids=["fresh", "retrack"])
@pytest.mark.parametrize("seed", range(3))
def test_write_tracks_the_official_dict(official, ours, seed, retrack, reverse):
    """From the prompted frame s, track s + 1, s + 2, ... (or back) writing each frame's tagged memory for the
    active objects, and check after every step that select() on the next frame equals the official selection from
    the dict of everything written. Objects are inactive on their conditioning frames (the tracker keeps the
    prompted output there) and, when ``fresh``, at random (their frame absent from the dict). With ``retrack``,
    the dict already holds memories of an earlier propagation (generation 0) everywhere, the bank starts as
    our predictor builds it for s (the frames behind s, plus stale frames ahead of s), and tracking overwrites
    them (generation 1)."""
    config, sel_fn, write_fn = ours
    rng = random.Random(1000 * seed + 10 * retrack + reverse)
    r, p = config.video_config.num_maskmem - 1, config.video_config.max_object_pointers_in_encoder - 1
    num_frames = rng.randint(24, 48)
    sign = -1 if reverse else 1
    s = rng.randint(num_frames // 3, num_frames - 1) if reverse else rng.randint(0, 2 * num_frames // 3)
    n_obj = rng.choice([2, 3, 5])  # 5: a padded bank row
    conds, non_conds = [], []
    for _ in range(n_obj):
        cond = {s} | set(rng.sample(range(num_frames), rng.randint(0, 3)))
        conds.append({f: 0 for f in sorted(cond)})
        if retrack:
            non_conds.append({f: 0 for f in range(num_frames) if f not in cond and rng.random() < 0.9})
        else:
            non_conds.append({})
    slots = []
    for cond, non_cond in zip(conds, non_conds, strict=True):
        recent, pointers = bank_slots(rng, s, reverse, num_frames, cond, non_cond, r, p, distractors=False)
        if retrack:  # stale frames ahead of s in the spare slots
            ahead = [(f, 0) for f in non_cond if (s - f) * sign < 0]
            rng.shuffle(ahead)
            recent += ahead[: r - len(recent)]
            pointers += ahead[: p - len(pointers)]
        slots.append({"cond": cond, "recent": recent, "pointers": pointers})
    bank = jax.device_put(build_bank(config, slots))
    o = bank.cond_frames.shape[0]

    def check(t_next):
        sel = sel_fn(bank, t_next, reverse, num_frames)
        for i in range(n_obj):
            expected = official.select(t_next, reverse, num_frames, conds[i], non_conds[i])
            got = decode_ours(config, bank, sel, i)
            assert got == expected, f"object {i} at frame {t_next} (s={s}, n={num_frames})"

    check(s + sign)
    t = s + sign
    steps = 0
    while 0 <= t < num_frames and steps < 30:
        active = np.zeros(o, bool)
        for i in range(n_obj):
            active[i] = t not in conds[i] and (retrack or rng.random() > 0.2)
        feats = np.full((o, GRID, GRID, bank.recent_features.shape[-1]), tag(t, 1), np.float32)
        ptrs = np.full((o, bank.pointers.shape[-1]), tag(t, 1), np.float32)
        bank = write_fn(bank, t, reverse, feats, ptrs, active)
        for i in range(n_obj):
            if active[i]:
                non_conds[i][t] = 1
        frames = jax.device_get(bank)
        assert (frames.recent_frames[n_obj:] == -1).all() and (frames.pointer_frames[n_obj:] == -1).all()
        if 0 <= t + sign < num_frames:
            check(t + sign)
        t += sign
        steps += 1
