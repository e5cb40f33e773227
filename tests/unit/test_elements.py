"""The cheap dataset and element helpers behave as pydicom's own constructors."""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from coercion.dicom.elements import encode_text, new_dataset, raw_element, simple_codec, text_values

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
