"""Minimal, idiomatic custom runtimes of the peer servers for `python -m bench peers`.

Each module runs only inside that peer's own virtualenv (built by `bench/peers.py`), never in
ours: it imports the peer's package, loads one SavedModel and calls its `serving_default`
signature on the decoded tensor, as a user of that server would write it.
"""
