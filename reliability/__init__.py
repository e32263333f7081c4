"""Diana's reliability suite: break it on purpose and check that nothing is lost. Each
scenario prints its figures and writes its section of docs/reliability.md; the test command
runs each at a size that fits CI (diana_pipeline_tests/test_reliability.py)."""
