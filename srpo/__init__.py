"""SRPO and Direct-Align for flow-matching text-to-image models."""

from srpo.quiet import quiet_third_party

__version__ = "0.1.0"

quiet_third_party()  # torch / torchao / diffusers notices that say nothing to a user (srpo/quiet.py)
