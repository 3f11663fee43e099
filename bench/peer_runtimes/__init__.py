"""The peers' model code (`python -m bench peers`), each run in that peer's own virtualenv."""
