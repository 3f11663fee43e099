"""mldm-serving's model server: a FastAPI app over the SavedModels in `models/`.

`create_app(Settings(...))` builds the app (see `service.app`); `python -m service` runs it.
"""

__version__ = "0.1.0"
