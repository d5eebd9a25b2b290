"""The benchmarks (bench/), run small."""
