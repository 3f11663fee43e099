"""The request context: the request id a task works for, and which client ids are kept."""

from __future__ import annotations

from service import context


def test_request_id_from_keeps_sane_client_ids_only() -> None:
    assert context.request_id_from([(b"x-request-id", b"abc-123")]) == "abc-123"
    for bad in (b"has space", b"\xff", b"x" * 129, b""):
        generated = context.request_id_from([(b"x-request-id", bad)])
        assert generated != bad.decode("latin-1") and len(generated) == 32


def test_enter_and_leave_scope_the_current_id() -> None:
    assert context.current_request_id() is None
    current, token = context.enter("r-1")
    assert context.current_request_id() == "r-1"
    context.leave(current, token)
    assert context.current_request_id() is None and current.request_id is None
