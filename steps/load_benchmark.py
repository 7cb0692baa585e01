"""Load a benchmark prompt set (HPDv2 layout, text or CSV list) with one category per prompt."""

from typing import Annotated, Tuple

from zenml import log_metadata, step

from srpo.evaluation.benchmarks import load_benchmark as load
from srpo.evaluation.config import BenchmarkConfig


@step
def load_benchmark(config: BenchmarkConfig) -> Tuple[
    Annotated[list[str], "benchmark_prompts"], Annotated[list[str], "benchmark_categories"]
]:
    """Prompts in seed order and their categories (index-aligned)."""
    bench = load(config)
    counts = {c: bench.categories.count(c) for c in bench.category_names()}
    log_metadata(metadata={"num_prompts": len(bench), "per_category": counts})
    return bench.prompts, bench.categories
