"""Building a Spec from layers of plain dicts: types and ranges first, then the cross-field rules."""

from __future__ import annotations

from pydantic import ValidationError

from .errors import SpecError, problems_from_validation
from .model import Spec
from .rules import cross_field_problems


def build_spec(data: dict, source: str = "the run spec") -> Spec:
    """Validate a layered dict into a Spec. Raises SpecError (a BadInput) listing every problem."""
    try:
        spec = Spec.model_validate(data)
    except ValidationError as error:
        raise SpecError(problems_from_validation(error), source) from None
    problems = cross_field_problems(spec)
    if problems:
        raise SpecError(problems, source)
    return spec
