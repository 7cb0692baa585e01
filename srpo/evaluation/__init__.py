"""Evaluation: metrics behind one interface, benchmarks, the runner, reports and human evaluation.

- :mod:`~srpo.evaluation.metrics`: HPSv2.1, PickScore, CLIP score, SGP-HPS, Aesthetic v2.5,
  ImageReward, and GenEval / DeQA adapters (``load_metric(MetricConfig(...))``);
- :mod:`~srpo.evaluation.benchmarks`: the HPDv2 layout, text and CSV prompt lists;
- :mod:`~srpo.evaluation.runner` / :mod:`~srpo.evaluation.suite`: generate with fixed seeds, score,
  summarise with bootstrap intervals (:mod:`~srpo.evaluation.results`);
- :mod:`~srpo.evaluation.human_eval`: blinded annotation pages and the import of their ratings;
- :mod:`~srpo.evaluation.prompt_analysis`: word frequencies of a prompt set.

See ``docs/evaluation.md``.
"""
