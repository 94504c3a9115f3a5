raise ImportError("no such thing here")
