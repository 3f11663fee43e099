"""Builds, trains, evaluates and exports the four models of the notebook into ``models/``
(TensorFlow Serving layout, see docs/ARCHITECTURE.md). Entry point: ``python -m training``."""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) drowns the progress bars.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
