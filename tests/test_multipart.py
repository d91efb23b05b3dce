"""OData's multipart batch format (connectors/multipart.py): requests as parts, and a batch
answer as Dataverse writes one (a change set nested in its place) read back in order."""

from __future__ import annotations

import pytest

from crmgate.connectors import multipart

ANSWER = (
    "--batchresponse_1\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    "HTTP/1.1 204 No Content\r\nOData-EntityId: https://org.crm.dynamics.com/api/data/v9.2/"
    "contacts(00000000-0000-0000-0000-000000000001)\r\n\r\n\r\n"
    "--batchresponse_1\r\n"
    'Content-Type: multipart/mixed; boundary="changesetresponse_2"\r\n\r\n'
    "--changesetresponse_2\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n"
    '{"error":{"code":"0x80040203","message":"lastname is required"}}\r\n'
    "--changesetresponse_2--\r\n"
    "--batchresponse_1--\r\n"
)


def test_requests_are_one_part_each_with_their_json_body() -> None:
    kind, body = multipart.encode(
        [("POST", "/api/data/v9.2/contacts", {"lastname": "Lovelace"}, {}),
         ("DELETE", "/api/data/v9.2/contacts(1)", None, {"If-Match": "*"})]
    )  # fmt: skip
    boundary = kind.split('boundary="')[1].rstrip('"')
    text = body.decode()
    assert text.count(f"--{boundary}\r\n") == 2 and text.endswith(f"--{boundary}--\r\n")
    posted = "POST /api/data/v9.2/contacts HTTP/1.1\r\nContent-Type: application/json; type=entry"
    assert posted + '\r\n\r\n{"lastname": "Lovelace"}' in text
    assert "DELETE /api/data/v9.2/contacts(1) HTTP/1.1\r\nIf-Match: *\r\n" in text


def test_answers_are_read_in_order_a_change_set_in_its_place() -> None:
    answers = multipart.decode('multipart/mixed; boundary="batchresponse_1"', ANSWER.encode())
    assert [status for status, _, _ in answers] == [204, 400]
    assert answers[0][1]["odata-entityid"].endswith("000000000001)")
    assert b"lastname is required" in answers[1][2]


@pytest.mark.parametrize(
    ("kind", "body", "said"),
    [
        ("application/json", b"{}", "is not multipart"),
        ('multipart/mixed; boundary="b"', b"--b\r\n\r\nnot a status line\r\n--b--", "status"),
    ],
)
def test_anything_else_is_refused_saying_why(kind: str, body: bytes, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        multipart.decode(kind, body)
