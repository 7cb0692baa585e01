"""Load a benchmark prompt set (HPDv2 layout, GenEval metadata, text or CSV list) with one category per prompt."""

from typing import Annotated, Optional, Tuple

from zenml import log_metadata, step

from srpo.evaluation.benchmarks import load_benchmark as load
from srpo.evaluation.config import BenchmarkConfig


@step
def load_benchmark(config: BenchmarkConfig) -> Tuple[
    Annotated[list[str], "benchmark_prompts"], Annotated[list[str], "benchmark_categories"],
    Annotated[list[int], "benchmark_indices"], Annotated[list[Optional[dict]], "benchmark_records"],
]:
    """Prompts, their categories, their indices in the full benchmark (seeds) and records (position-aligned)."""
    bench = load(config)
    counts = {c: bench.categories.count(c) for c in bench.category_names()}
    log_metadata(metadata={"num_prompts": len(bench), "per_category": counts})
    return bench.prompts, bench.categories, bench.indices, bench.records
