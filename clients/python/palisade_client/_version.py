# The project's version (the workspace version in Cargo.toml; a test checks).
__version__ = "0.1.0"
