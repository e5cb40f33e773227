"""PS3.15 Attribute Confidentiality Profile: table, options and the de-identifier."""

from coercion.profile._table import EDITION
from coercion.profile.compiled import Action, CompiledProfile, PatternRow, compile_profile
from coercion.profile.deidentifier import Change, Deidentifier, ItemPath, Record
from coercion.profile.options import BASIC_PROFILE, CodedConcept, Option, parse_options

__all__ = [
    "BASIC_PROFILE",
    "EDITION",
    "Action",
    "Change",
    "CodedConcept",
    "CompiledProfile",
    "Deidentifier",
    "ItemPath",
    "Option",
    "PatternRow",
    "Record",
    "compile_profile",
    "parse_options",
]
