"""A pseudonymisation scope's settings as the directory writes them: templates and a date range.

Plain data, checked when made: the loader (:mod:`coercion.directory.config`)
builds them, :class:`~coercion.engine.registry.ActionEnv` carries them to the
``pseudonymize:``/``reidentify:`` actions, and the pseudonym store
(:mod:`coercion.store`) makes pseudonyms and offsets with them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ScopeSettings"]


@dataclass(frozen=True)
class ScopeSettings:
    """How a scope makes pseudonyms and date offsets.

    Templates take ``{scope}`` and ``{hash}`` (12 upper-case hex digits
    derived from the patient); an offset's day part is in
    ``offset_min..offset_max`` (days), plus a part below a day in the same
    direction (see :func:`coercion.profile.dates.offset_seconds`).
    """

    id_template: str = "{scope}-{hash}"
    name_template: str = "{scope}^{hash}"
    offset_min: int = -3650
    offset_max: int = -1

    def __post_init__(self) -> None:
        if self.offset_min > self.offset_max:
            raise ValueError(f"date offset range {self.offset_min}..{self.offset_max} is empty")
        for template in (self.id_template, self.name_template):
            try:
                template.format(scope="S", hash="0" * 12)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"template {template!r}: only {{scope}} and {{hash}} may be used ({exc})"
                ) from None
