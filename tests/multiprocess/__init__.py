"""The processes of `tests/test_multiprocess.py`: the training each one runs, and how they are started."""
