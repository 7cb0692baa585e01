"""Word-frequency report of a prompt set (paper, supplement S3): a table and a bar chart."""

from typing import Annotated, Optional

from zenml import log_metadata, step

from srpo.evaluation.artifacts import PromptReport
from srpo.evaluation.config import PromptAnalysisConfig
from srpo.evaluation.prompt_analysis import benchmark_prompts, write_prompt_report
from steps._scratch import scratch_dir


@step
def analyze_prompts(prompts: list[str], config: PromptAnalysisConfig, categories: Optional[list[str]] = None
                    ) -> Annotated[PromptReport, "prompt_word_frequency"]:
    """Top words and control-word frequencies (``index.html`` shows both) of the benchmark's own prompts
    (``categories`` given: its style variants left out)."""
    report = write_prompt_report(benchmark_prompts(prompts, categories), config, scratch_dir("srpo-words-") / "report")
    data = report.read_json()
    log_metadata(metadata={"top_words": {r["word"]: r["count"] for r in data["top"][:10]},
                           "control_words": {r["word"]: r["count"] for r in data["control"]}})
    return report
