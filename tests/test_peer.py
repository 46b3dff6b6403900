"""benchmarks/peer.py's bookkeeping: timings taken in interleaved rounds, and lgm's time over PyTorch's best,
whole and paired by round, against direct computations (a fake clock: no real timing)."""

import statistics

import pytest

from benchmarks import peer


def test_rounds_visit_every_side_in_turn_and_keep_each_rounds_median(monkeypatch):
  clock, order = [0.0], []

  def call(name, warmup_ms, ms_per_round):  # each call advances the clock by its next duration
    durations = iter([warmup_ms] * 2 + [ms for ms in ms_per_round for _ in range(3)])

    def run():
      order.append(name)
      clock[0] += next(durations)
    return run

  monkeypatch.setattr(peer.time, 'perf_counter', lambda: clock[0] / 1e3)
  a = peer.Contender({'side': 'lgm'}, {'train_step': call('a', 1000.0, [10.0, 30.0, 20.0])}, {})
  b = peer.Contender({'side': 'pytorch'}, {'train_step': call('b', 5000.0, [40.0, 10.0, 90.0])},
                     {'train_step': {'gflop': 1}})
  records = peer.interleaved_medians([a, b], steps=3, rounds=3, warmup=2)
  assert order == ['a', 'a', 'b', 'b'] + (['a'] * 3 + ['b'] * 3) * 3
  assert [r['round_ms'] for r in records] == [pytest.approx([10.0, 30.0, 20.0]),
                                              pytest.approx([40.0, 10.0, 90.0])]
  assert [r['ms'] for r in records] == pytest.approx([20.0, 40.0])  # the warm-up calls untimed
  assert records[1]['gflop'] == 1
  assert all(r['timed_calls'] == 9 and r['what'] == 'train_step' for r in records)


def test_a_call_of_k_steps_is_timed_per_step(monkeypatch):
  clock = [0.0]

  def four_steps():
    clock[0] += 0.2  # 200 ms a call, 50 ms a step

  monkeypatch.setattr(peer.time, 'perf_counter', lambda: clock[0])
  contender = peer.Contender({'side': 'lgm'}, {'train_step': four_steps, 'forward': four_steps}, {},
                             {'train_step': 4})
  step, forward = peer.interleaved_medians([contender], steps=2, rounds=2, warmup=1)
  assert step['ms'] == pytest.approx(50.0) and step['round_ms'] == pytest.approx([50.0, 50.0])
  assert forward['ms'] == pytest.approx(200.0)  # one unit per call unless told


def test_ratios_take_pytorchs_best_variant_whole_and_paired_by_round():
  def record(side, dtype, what, round_ms, **extra):
    return {'side': side, 'dtype': dtype, 'what': what, 'round_ms': round_ms, 'ms': statistics.median(round_ms),
            **extra}

  records = []
  for what in ('train_step', 'forward'):
    for dtype, scale in (('float32', 1.0), ('bfloat16', 2.0)):
      records += [record('lgm', dtype, what, [scale * 100, scale * 120, scale * 90]),
                  record('pytorch', dtype, what, [scale * 110, scale * 100, scale * 95], variant='eager'),
                  record('pytorch', dtype, what, [scale * 90, scale * 130, scale * 100], variant='compiled')]
  ratios = peer.time_ratios(records)
  assert ratios['train_step_float32'] == 100 / 100  # lgm's median 100, PyTorch's best median min(100, 100)
  # Paired: eager's rounds give 100/110, 120/100, 90/95 (median 0.947...); compiled's 100/90, 120/130, 90/100.
  eager = statistics.median([100 / 110, 120 / 100, 90 / 95])
  compiled = statistics.median([100 / 90, 120 / 130, 90 / 100])
  assert ratios['train_step_float32_paired'] == max(eager, compiled) == 90 / 95  # eager's pairs the worse for lgm
  assert ratios['forward_bfloat16_paired'] == ratios['train_step_float32_paired']  # scale-free
  assert ratios['train_step_best_of_each'] == 100 / 100  # float32 is each side's best
