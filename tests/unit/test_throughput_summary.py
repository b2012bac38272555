"""bench.throughput's summary of chunk records: the steady s/step leaves out the first
video of each size on each rank (it pays the compile inside its steps)."""
from bench.throughput import steady_seconds_per_step


def test_steady_seconds_per_step_leaves_out_each_first_video_of_a_size():
    ranks = {0: [{"size": "A", "s_per_step": 2.5}, {"size": "A", "s_per_step": 1.0},
                 {"size": "B", "s_per_step": 3.0}, {"size": "B", "s_per_step": 1.1}],
             1: [{"size": "A", "s_per_step": 2.4}, {"size": "A", "s_per_step": 0.9}]}
    assert sorted(steady_seconds_per_step(ranks)) == [0.9, 1.0, 1.1]


def test_with_only_first_videos_every_video_counts():
    ranks = {0: [{"size": "A", "s_per_step": 2.5}], 1: [{"size": "B", "s_per_step": 2.0}]}
    assert sorted(steady_seconds_per_step(ranks)) == [2.0, 2.5]
