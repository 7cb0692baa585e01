"""Make the library's progress lines visible in step logs."""

import logging


def library_logging(level: int = logging.INFO) -> None:
    """Send ``srpo.*`` log records at ``level`` to the step's log (ZenML captures stderr/logging)."""
    logger = logging.getLogger("srpo")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
