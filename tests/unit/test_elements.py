"""The cheap dataset and element helpers behave as pydicom's own constructors."""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from coercion.dicom.elements import (
    LONG_VR_BYTES,
    SHORT_VR_BYTES,
    codec_for,
    dictionary_vr,
    encode_text,
    joined_text,
    new_dataset,
    python_encodings,
    raw_element,
    simple_codec,
    text_values,
)

PATIENT_NAME = BaseTag(0x00100010)
CHARSET = BaseTag(0x00080005)
Elements = dict[BaseTag, DataElement | RawDataElement]


def raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    return RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True, True, False)


def test_new_dataset_has_the_state_of_a_constructed_one() -> None:
    made = new_dataset({}, "iso8859", False, True)
    fresh = Dataset()
    assert set(made.__dict__) == set(fresh.__dict__)
    assert made._read_implicit is False and made._read_little is True
    # Mutable state is never shared between datasets.
    other = new_dataset({}, "iso8859", False, True)
    for name, value in made.__dict__.items():
        if isinstance(value, dict):
            assert value is not other.__dict__[name], name


def test_new_dataset_reads_and_converts_raw_elements() -> None:
    made = new_dataset({PATIENT_NAME: raw(0x00100010, "PN", b"Doe^Jane")}, "iso8859", False, True)
    assert made.PatientName == "Doe^Jane"
    made.PatientID = "X1"
    assert made[0x00100020].value == "X1"


def test_raw_element_round_trips_through_pydicom() -> None:
    ds = new_dataset({}, "iso8859", True, True)
    ds._dict[BaseTag(0x00080018)] = raw_element(
        0x00080018, "UI", encode_text("UI", ["1.2.3"]), True, True
    )
    assert ds[0x00080018].value == "1.2.3"
    assert encode_text("UI", ["1.2.3"]) == b"1.2.3\x00"
    assert encode_text("LO", ["A", "B"]) == b"A\\B "
    assert encode_text("LO", ["A", "BC"]) == b"A\\BC"


def test_text_values_decodes_raw_values_in_the_character_set() -> None:
    elements: Elements = {
        CHARSET: raw(0x00080005, "CS", b"ISO_IR 192"),
        PATIENT_NAME: raw(0x00100010, "PN", "Müller^Zoë\\Other ".encode()),
    }
    ds = new_dataset(elements, "iso8859", False, True)
    assert simple_codec(ds) == "utf_8"
    assert text_values(ds, 0x00100010) == ["Müller^Zoë", "Other"]
    assert text_values(ds, 0x00100020) == []


def test_text_values_leaves_code_extensions_to_pydicom() -> None:
    # ISO 2022 IR 87 (Japanese) needs escape sequences: pydicom decodes it.
    name = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"
    elements: Elements = {
        CHARSET: raw(0x00080005, "CS", b"\\ISO 2022 IR 87"),
        PATIENT_NAME: raw(0x00100010, "PN", name),
    }
    ds = new_dataset(elements, "iso8859", False, True)
    assert simple_codec(ds) is None
    assert text_values(ds, 0x00100010) == ["Yamada^Tarou=山田^太郎"]


def test_dictionary_vr_says_what_the_dictionary_says_or_the_default() -> None:
    """The first of an ambiguous VR; UN (or what the caller asks) for a tag nobody defines."""
    assert dictionary_vr(0x00100010) == "PN"
    assert dictionary_vr(0x00280106) == "US"  # US or SS
    assert dictionary_vr(0x60003000) == "OB"  # a repeating group: OB or OW
    assert dictionary_vr(0x00190010) == "UN"
    assert dictionary_vr(0x00190010, None) is None
    assert dictionary_vr(0x00190010, "") == ""
    assert dictionary_vr(0x0072006D, None) == "UN"  # Selector UN Value: UN by definition


def test_codec_for_names_one_codec_or_none() -> None:
    """A DICOM term, its values, or pydicom's conversion: one codec, or None for ISO 2022."""
    assert codec_for(None) == codec_for("") == "latin_1"
    assert codec_for("ISO_IR 192") == codec_for(["ISO_IR 192"]) == "utf_8"
    assert codec_for(["UTF8"]) == "utf_8"
    assert codec_for(["iso8859"]) == codec_for("ISO_IR 100") == "latin_1"
    assert codec_for(["", "ISO 2022 IR 87"]) is None
    assert codec_for(["iso8859", "iso2022_jp"]) is None


def test_python_encodings_converts_or_says_none() -> None:
    """Backslash-separated text or values become pydicom's Python codecs."""
    assert python_encodings("ISO_IR 100") == ["latin_1"]
    assert python_encodings("\\ISO 2022 IR 87") == ["iso8859", "iso2022_jp"]
    assert python_encodings(["ISO_IR 192"]) == ["UTF8"]


def test_joined_text_by_tag_or_keyword() -> None:
    """Values joined by backslash; '' when absent or the keyword is unknown."""
    elements: Elements = {PATIENT_NAME: raw(0x00100010, "PN", b"Doe^Jane\\Roe^Rick ")}
    ds = new_dataset(elements, "iso8859", False, True)
    assert joined_text(ds, 0x00100010) == joined_text(ds, "PatientName") == "Doe^Jane\\Roe^Rick"
    assert joined_text(ds, "PatientID") == ""
    assert joined_text(ds, "NoSuchKeyword") == ""


def test_vr_header_tables_are_pydicoms() -> None:
    """Explicit VR headers: 4-byte lengths for OB, SQ, UT...; 2-byte ones for the rest."""
    assert {b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR", b"SV", b"UV"} <= LONG_VR_BYTES
    assert {b"PN", b"US", b"AT", b"UI"} <= SHORT_VR_BYTES
    assert not LONG_VR_BYTES & SHORT_VR_BYTES
    assert len(LONG_VR_BYTES | SHORT_VR_BYTES) == 34
