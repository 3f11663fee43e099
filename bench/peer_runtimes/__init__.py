"""The peer servers' model code for `python -m bench peers`, each file run in that peer's own
virtualenv (never ours) as a user of that server would write it; `peer_common` is what they share.
"""
