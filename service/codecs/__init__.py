"""Wire codecs: pure functions between bytes or JSON values and named numpy arrays.

One module per wire format, all sharing one dtype table (`dtypes`): the Open Inference Protocol
(`v2`: JSON and the binary tensor data extension), TensorFlow Serving's REST bodies
(`tfserving`: row and columnar, `{"b64"}`), `.npy` files (`npy`) and request content codings
(`compression`: gzip, deflate). They know nothing of HTTP frameworks or models' execution, so
they are tested without a server; the routes decode with them, call the data plane and encode.
"""
