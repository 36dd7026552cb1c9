"""Side-by-side speed benchmarks; `python -m benchmarks.run --out BENCHMARKS.md` runs them all."""
