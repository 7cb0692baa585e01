"""Rank candidate control words for a reward (CSV report and a dashboard table)."""

from typing import Annotated

from zenml import log_metadata, step

from srpo.evaluation.artifacts import ReportFolder
from srpo.evaluation.word_report import WordFinderConfig, run_word_finder
from steps._scratch import scratch_dir


@step
def find_control_words(config: WordFinderConfig) -> Annotated[ReportFolder, "control_words"]:
    """Which candidate words' text directions separate ``images_a`` from ``images_b`` under the reward
    (``index.html``: the ranked table with bootstrap intervals; ``control_words.csv``)."""
    report, scores = run_word_finder(config, scratch_dir("srpo-words-") / "control-words")
    log_metadata(metadata={"best_words": [s.word for s in scores[:5]],
                           "separation": {s.word: round(s.separation, 4) for s in scores}})
    return report
