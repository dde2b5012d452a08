"""Measurement tools read known costs correctly (optimum-benchmark's habit)."""
from __future__ import annotations

import subprocess
import sys
import time

from evalq.measure.speed import percentile
from evalq.measure.torch_model import TokenClock

ALLOC = """
import sys
from evalq.measure.memory import peak_rss_bytes
before = peak_rss_bytes()
block = bytearray(800 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1  # touch every page so it is resident
print(peak_rss_bytes() - before)
"""


def test_peak_rss_reads_an_800_mb_allocation_within_10_percent():
    grown = int(subprocess.run([sys.executable, "-c", ALLOC], capture_output=True, text=True, check=True).stdout)
    assert abs(grown - 800 * 1024 * 1024) / (800 * 1024 * 1024) < 0.10, grown


def test_token_clock_reads_sleeps():
    clock = TokenClock(cuda=False)
    clock.start()
    for _ in range(3):
        time.sleep(0.2)
        clock.put(None)
    t = clock.seconds()
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert all(0.18 <= g <= 0.3 for g in gaps), gaps


def test_percentile():
    assert percentile([1, 2, 3, 4, 5], 0.5) == 3
    assert percentile([1, 2, 3, 4, 5], 0.9) == 4.6
    assert percentile([7], 0.99) == 7


PHASES = """
from evalq.measure.memory import PeakMemory
peak = PeakMemory("cpu")
with peak.phase("big"):
    block = bytearray(600 * 1024 * 1024)
    del block
with peak.phase("small"):
    block = bytearray(100 * 1024 * 1024)
    del block
out = peak.finish()
print(out["by_phase"]["big"]["peak_rss_bytes"], out["by_phase"]["small"]["peak_rss_bytes"], out["peak_memory_bytes"], out["phase_peaks_resettable"])
"""


def test_peaks_are_per_phase_and_the_overall_peak_is_their_max():
    big, small, overall, resettable = subprocess.run([sys.executable, "-c", PHASES], capture_output=True, text=True, check=True).stdout.split()
    assert resettable == "True"
    mb = 1024 * 1024
    assert int(big) - int(small) > 450 * mb  # the small phase does not see the big one's peak
    assert int(small) < 300 * mb
    assert int(overall) == int(big)
