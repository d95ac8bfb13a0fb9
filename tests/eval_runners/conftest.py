"""The runner tests use the shared `tiny_model_path` and `image_folder` fixtures (tests/conftest.py)."""
