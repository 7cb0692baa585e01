"""Third-party notices that say nothing to a user of this project, filtered by logger and message.

Each entry names the logger that emits the notice and a fragment of its text; nothing else from those
loggers is touched, so real warnings still reach the terminal:

- torch's pytree: torchao registers its Enums with ``register_constant()``, which torch now deprecates;
- diffusers' torchao quantizer: "Unable to import `torchao` Tensor objects" (an optional import);
- diffusers' ``ModelMixin.to``: "should be kept in float32: []" (the list is empty: no module is affected);
- open_clip's ``get_tokenizer``: three INFO lines on the root logger each time a tokenizer is read (the
  control-word check reads the reward's tokenizer without its weights).
"""

from __future__ import annotations

import logging

NOTICES = [
    ("torch.utils._pytree", "Calling register_constant() on Enum subclasses is deprecated"),
    ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to import `torchao` Tensor objects"),
    ("diffusers.models.modeling_utils", "that should be kept in float32: []"),
    # open_clip's tokenizer factory logs on the root logger (shown at INFO, e.g. under ZenML's logging)
    ("", "Parsing tokenizer identifier. Schema:"),
    ("", "Attempting to load config from built-in:"),
    ("", "Using default SimpleTokenizer."),
]


class _DropNotice(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_third_party() -> None:
    """Attach the filters (idempotent): called when ``srpo`` is imported, before torch or diffusers log anything."""
    for name, fragment in NOTICES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(_DropNotice(fragment))
