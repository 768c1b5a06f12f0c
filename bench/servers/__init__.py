"""The peer servers, one module each, runnable as `python -m bench.servers.<name> --port N`."""
