"""Read, clean and split the prompt list."""

from typing import Annotated

from zenml import log_metadata, step

from srpo.prompts import PromptConfig, prepare_prompts as _prepare


@step
def prepare_prompts(config: PromptConfig) -> tuple[
    Annotated[list[str], "train_prompts"], Annotated[list[str], "heldout_prompts"]
]:
    """Prompts from a local path or fsspec URL, cleaned and split into train / held-out."""
    split = _prepare(config)
    log_metadata(metadata={"num_train": len(split.train), "num_heldout": len(split.heldout),
                           "source": config.source})
    return split.train, split.heldout
