"""Routers: task endpoints, TensorFlow Serving REST, KServe V2, model status."""
