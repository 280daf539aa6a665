//! Configuration of the `ingest` function.
