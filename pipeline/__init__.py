"""One short script per DVC stage: read params, call the library, write the declared outs."""
