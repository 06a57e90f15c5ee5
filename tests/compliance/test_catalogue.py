"""The shipped catalogue: the frameworks' real shape (ISO/IEC 27001:2022 Annex A has 93
controls in four themes, NIST CSF 2.0 106 subcategories in 22 categories of 6 functions,
SOC 2 the common criteria CC1-CC9 and availability A1), unique ids, and every mapping of
our controls pointing at a requirement that exists."""

from __future__ import annotations

from collections import Counter

from opscenter.compliance import catalogue
from opscenter.compliance.schemas import Status
from opscenter.compliance.service import CHECKS, combine


def test_iso_27001_2022_annex_a_has_its_93_controls() -> None:
    iso = catalogue.frameworks()["iso27001"]
    ids = [r.id for r in iso.requirements]
    assert len(ids) == len(set(ids)) == 93
    assert Counter(r.group for r in iso.requirements) == {
        "A.5": 37,
        "A.6": 8,
        "A.7": 14,
        "A.8": 34,
    }
    by_id = {r.id: r.title for r in iso.requirements}
    assert by_id["A.8.13"] == "Information backup"
    assert by_id["A.5.7"] == "Threat intelligence"  # new in 2022
    assert by_id["A.8.34"] == "Protection of information systems during audit testing"


def test_nist_csf_2_has_106_subcategories_in_22_categories() -> None:
    csf = catalogue.frameworks()["nist-csf"]
    ids = [r.id for r in csf.requirements]
    assert len(ids) == len(set(ids)) == 106
    assert len({r.group for r in csf.requirements}) == len(csf.groups) == 22
    assert {g.split(".")[0] for g in csf.groups} == {"GV", "ID", "PR", "DE", "RS", "RC"}
    assert "ID.AM-06" not in ids  # withdrawn in 2.0
    assert "PR.DS-11" in ids


def test_soc2_common_criteria_and_availability() -> None:
    soc2 = catalogue.frameworks()["soc2"]
    groups = Counter(r.group for r in soc2.requirements)
    assert groups == {
        "CC1": 5,
        "CC2": 3,
        "CC3": 4,
        "CC4": 2,
        "CC5": 3,
        "CC6": 8,
        "CC7": 5,
        "CC8": 1,
        "CC9": 2,
        "A1": 3,
    }


def test_every_control_maps_to_existing_requirements_across_frameworks() -> None:
    frameworks = catalogue.frameworks()
    for control in catalogue.controls().values():
        assert control.check is None or control.check in CHECKS, control.id
        assert len(control.maps) >= 2, f"{control.id} maps into one framework only"
        for framework_id, ids in control.maps.items():
            known = {r.id for r in frameworks[framework_id].requirements}
            assert ids and set(ids) <= known, (control.id, set(ids) - known)
            assert len(ids) == len(set(ids)), control.id


def test_a_requirement_combines_its_controls() -> None:
    met, partial, no, none = Status.MET, Status.PARTIAL, Status.NOT_MET, Status.NO_EVIDENCE
    assert combine([]) is Status.NOT_ASSESSED
    assert combine([met, met]) is met
    assert combine([none, none]) is none
    assert combine([no, none]) is no
    assert combine([met, none]) is partial  # a control without evidence keeps it from met
    assert combine([met, no]) is partial
    assert combine([partial]) is partial
