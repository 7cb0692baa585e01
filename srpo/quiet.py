"""Third-party notices that say nothing to a user of this project, filtered by logger and message.

Each entry names the logger that emits the notice and a fragment of its text; nothing else from those
loggers is touched, so real warnings still reach the terminal:

- torch's pytree: torchao registers its Enums with ``register_constant()``, which torch now deprecates;
- diffusers' torchao quantizer: "Unable to import `torchao` Tensor objects" (an optional import);
- diffusers' ``ModelMixin.to``: "should be kept in float32: []" (the list is empty: no module is affected).
"""

from __future__ import annotations

import logging

NOTICES = {
    "torch.utils._pytree": "Calling register_constant() on Enum subclasses is deprecated",
    "diffusers.quantizers.torchao.torchao_quantizer": "Unable to import `torchao` Tensor objects",
    "diffusers.models.modeling_utils": "that should be kept in float32: []",
}


class _DropNotice(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_third_party() -> None:
    """Attach the filters (idempotent): called when ``srpo`` is imported, before torch or diffusers log anything."""
    for name, fragment in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(_DropNotice(fragment))
