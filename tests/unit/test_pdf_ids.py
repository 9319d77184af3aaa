"""A fiche's PDF is the same bytes whichever print it comes from: Chromium numbers the tagged PDF's structure
elements with DOM node numbers, which CI once saw shift by one between two prints of one page."""

from __future__ import annotations

import re

from qpvhub.publish.pdf import _stable_ids


def _tagged(first: int, gap: int = 1) -> bytes:
    """The layout Chromium writes (seen in CI's two prints of QP035005.pdf): IDs on struct elements, in a table
    header's /Headers, and in the ID tree's sorted /Names; `first` and `gap` as the DOM numbered them."""
    ids = [first, first + gap, first + 2 * gap + 3]
    n = [b"(node%08d)" % i for i in ids]
    return (b"%PDF-1.4\n42 0 obj\n<</Type /StructElem\n/S /TH\n/ID " + n[0] + b">>\nendobj\n"
            b"44 0 obj\n<</Type /StructElem\n/S /TD\n/A [<</O /Table\n/Headers [" + n[0] + b"]>>]\n/ID " + n[1]
            + b">>\nendobj\n46 0 obj\n<</Type /StructElem\n/S /P\n/ID " + n[2] + b">>\nendobj\n"
            b"535 0 obj\n<</Names [" + n[0] + b" 42 0 R " + n[1] + b" 44 0 R " + n[2] + b" 46 0 R]>>\nendobj\n"
            b"startxref\n145883\n%%EOF\n")


def test_shifted_node_numbers_give_the_same_bytes_and_length() -> None:
    a, b = _tagged(32), _tagged(33)
    assert a != b and len(a) == len(b)
    assert _stable_ids(a) == _stable_ids(b)
    assert len(_stable_ids(a)) == len(a)  # xref offsets stay valid
    assert len(set(re.findall(rb"node\d{8}", _stable_ids(a)))) == 3  # distinct elements stay distinct


def test_the_id_tree_stays_sorted_and_references_stay_consistent() -> None:
    out = _stable_ids(_tagged(998, gap=7))
    names = re.search(rb"/Names \[(.*?)\]", out).group(1)
    keys = re.findall(rb"\((node\d{8})\)", names)
    assert keys == sorted(keys) == [b"node00000001", b"node00000002", b"node00000003"]
    # the header a cell points at is the element that carries that ID
    assert b"/Headers [(node00000001)]" in out and b"/S /TH\n/ID (node00000001)" in out


def test_a_pdf_without_structure_ids_is_left_as_it_is() -> None:
    plain = b"%PDF-1.4\n1 0 obj\n<</Title (node)>>\nendobj\n%%EOF\n"
    assert _stable_ids(plain) == plain
