"""Human evaluation: blinded annotation pages (export) and checked, un-blinded results (import)."""

from srpo.evaluation.human_eval.export import export_human_eval
from srpo.evaluation.human_eval.importer import AnnotationError, headline, import_human_eval, read_key
from srpo.evaluation.human_eval.rubric import DIMENSION_KEYS, DIMENSIONS, LEVELS, overall_rating

__all__ = ["AnnotationError", "DIMENSIONS", "DIMENSION_KEYS", "LEVELS", "export_human_eval", "headline",
           "import_human_eval", "overall_rating", "read_key"]
